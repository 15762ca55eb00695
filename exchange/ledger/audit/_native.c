/* The audit's block scanner in C: exchange.ledger.audit._native.
 *
 * An optional accelerator for exchange/ledger/audit/scan.py, which stays the reference:
 * bulk() accepts, line by line, exactly the entry lines Scanner.bulk accepts (the plain
 * shape: {"index":N,"leaf":"B64"} with a canonical leaf of plain strings, nulls and small
 * integers) and stops at the first line it does not accept, which the Python scanner then
 * reads carefully. It refuses more than the Python bulk path in one place only: base64
 * with non-zero unused bits (strict a2b allows them; the careful path judges those lines).
 * levels() is scan._levels over hashes held as one buffer of 32-byte digests.
 *
 * Untrusted input: every read is bounded by the line's end; nothing is written outside
 * buffers sized before use. SHA-256 is OpenSSL's (the library hashlib uses).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define HASH 32

static const char HEX[] = "0123456789abcdef";
static signed char B64[256];

static void
init_b64(void)
{
    const char *alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(B64, -1, sizeof B64);
    for (int i = 0; i < 64; i++)
        B64[(unsigned char)alphabet[i]] = (signed char)i;
}

/* Strict standard base64 of s[0..n) into out; the decoded length, or -1. Refuses a length
 * that is not a positive multiple of 4, any byte outside the alphabet, padding anywhere
 * but the last two places, and non-zero unused bits. */
static Py_ssize_t
b64_decode(const unsigned char *s, Py_ssize_t n, unsigned char *out)
{
    if (n <= 0 || n % 4)
        return -1;
    Py_ssize_t o = 0, full = n - 4;
    for (Py_ssize_t i = 0; i < full; i += 4) {
        int a = B64[s[i]], b = B64[s[i + 1]], c = B64[s[i + 2]], d = B64[s[i + 3]];
        if ((a | b | c | d) < 0)
            return -1;
        out[o++] = (unsigned char)(a << 2 | b >> 4);
        out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
        out[o++] = (unsigned char)((c & 3) << 6 | d);
    }
    const unsigned char *t = s + full;
    int a = B64[t[0]], b = B64[t[1]];
    if ((a | b) < 0)
        return -1;
    out[o++] = (unsigned char)(a << 2 | b >> 4);
    if (t[2] == '=') {
        if (t[3] != '=' || (b & 15))
            return -1;
        return o;
    }
    int c = B64[t[2]];
    if (c < 0)
        return -1;
    out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
    if (t[3] == '=') {
        if (c & 3)
            return -1;
        return o;
    }
    int d = B64[t[3]];
    if (d < 0)
        return -1;
    out[o++] = (unsigned char)((c & 3) << 6 | d);
    return o;
}

/* A cursor over one leaf; every match advances it or fails without reading past end. */
typedef struct {
    const unsigned char *p, *end;
} Cur;

static int
lit(Cur *c, const char *s, Py_ssize_t n)
{
    if (c->end - c->p < n || memcmp(c->p, s, (size_t)n) != 0)
        return 0;
    c->p += n;
    return 1;
}
#define LIT(c, s) lit((c), (s), (Py_ssize_t)(sizeof(s) - 1))

/* "[^"]*" (the bytes were checked plain before) */
static int
str(Cur *c)
{
    if (c->p >= c->end || *c->p != '"')
        return 0;
    const unsigned char *q = memchr(c->p + 1, '"', (size_t)(c->end - c->p - 1));
    if (q == NULL)
        return 0;
    c->p = q + 1;
    return 1;
}

/* null | "[^"]*" */
static int
opt(Cur *c)
{
    return LIT(c, "null") || str(c);
}

/* 0 | -?[1-9][0-9]{0,17} (negative only if allowed); the span in *s, *n */
static int
integer(Cur *c, int negative, const unsigned char **s, Py_ssize_t *n)
{
    const unsigned char *p = c->p;
    if (negative && p < c->end && *p == '-')
        p++;
    if (p >= c->end || *p < '0' || *p > '9')
        return 0;
    if (*p == '0') {
        if (p != c->p)  /* -0 */
            return 0;
        p++;
    } else {
        const unsigned char *digits = p;
        while (p < c->end && *p >= '0' && *p <= '9')
            p++;
        if (p - digits > 18)
            return 0;
    }
    *s = c->p;
    *n = p - c->p;
    c->p = p;
    return 1;
}

/* exactly 64 bytes before a quote (no quote among them) */
static int
hex64(Cur *c, const unsigned char **s)
{
    if (c->end - c->p < 65 || c->p[64] != '"' || memchr(c->p, '"', 64) != NULL)
        return 0;
    *s = c->p;
    c->p += 64;
    return 1;
}

static int
lower_hex(const unsigned char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

typedef struct {
    const unsigned char *idx, *prev, *ptr, *subject; /* subject NULL: null */
    Py_ssize_t idx_n, ptr_n;
    long long index;
} Leaf;

/* The canonical leaf shape of scan._LEAF_LINE, on plain bytes (0x20-0x7e, no backslash). */
static int
parse_leaf(const unsigned char *s, Py_ssize_t n, Leaf *f)
{
    unsigned bad = 0;  /* one pass with no branch: the compiler vectorizes it */
    for (Py_ssize_t i = 0; i < n; i++)
        bad |= (unsigned)(s[i] < 0x20) | (unsigned)(s[i] > 0x7e) | (unsigned)(s[i] == '\\');
    if (bad)
        return 0;
    Cur c = {s, s + n};
    const unsigned char *ignored;
    Py_ssize_t ignored_n;
    if (!(LIT(&c, "{\"actor\":") && str(&c) && LIT(&c, ",\"certificate\":") && opt(&c)
          && LIT(&c, ",\"consent\":") && opt(&c) && LIT(&c, ",\"index\":")
          && integer(&c, 0, &f->idx, &f->idx_n) && LIT(&c, ",\"item\":") && opt(&c)
          && LIT(&c, ",\"kind\":") && str(&c) && LIT(&c, ",\"node\":") && str(&c)
          && LIT(&c, ",\"outcome\":") && str(&c) && LIT(&c, ",\"prev\":\"")
          && hex64(&c, &f->prev) && lower_hex(f->prev, 64)
          && LIT(&c, "\",\"prev_subject\":")))
        return 0;
    if (!LIT(&c, "null") && !integer(&c, 0, &ignored, &ignored_n))
        return 0;
    const unsigned char *ptr_end = c.p;  /* prev_subject's span ends here */
    if (!(LIT(&c, ",\"reason\":") && opt(&c) && LIT(&c, ",\"request_sha256\":") && opt(&c)
          && LIT(&c, ",\"subject\":")))
        return 0;
    if (LIT(&c, "null")) {
        f->subject = NULL;
    } else {
        if (!LIT(&c, "\"") || !hex64(&c, &f->subject) || !LIT(&c, "\""))
            return 0;
        if (!lower_hex(f->subject, 64))  /* a pseudonym (scan._HEX64) */
            return 0;
    }
    if (!(LIT(&c, ",\"time_ms\":") && integer(&c, 1, &ignored, &ignored_n)
          && LIT(&c, ",\"v\":1}") && c.p == c.end))
        return 0;
    /* prev_subject's span: between ,"prev_subject": and ,"reason": */
    f->ptr = f->prev + 64 + sizeof("\",\"prev_subject\":") - 1;
    f->ptr_n = ptr_end - f->ptr;
    long long v = 0;
    for (Py_ssize_t i = 0; i < f->idx_n; i++)
        v = v * 10 + (f->idx[i] - '0');
    f->index = v;
    if (f->ptr[0] != 'n') {  /* a back-pointer points back: 0 <= prev_subject < index */
        long long ptr = 0;
        for (Py_ssize_t i = 0; i < f->ptr_n; i++)
            ptr = ptr * 10 + (f->ptr[i] - '0');
        if (ptr >= v)
            return 0;
    }
    return 1;
}

/* {"index":N,"leaf":" at s; the offset just past it, or -1 */
static Py_ssize_t
line_head(const unsigned char *s, Py_ssize_t n)
{
    Cur c = {s, s + n};
    const unsigned char *ignored;
    Py_ssize_t ignored_n;
    if (LIT(&c, "{\"index\":") && integer(&c, 0, &ignored, &ignored_n)
        && LIT(&c, ",\"leaf\":\""))
        return c.p - s;
    return -1;
}

static void
leaf_hash(const unsigned char *leaf, Py_ssize_t n, unsigned char *out)
{
    static const unsigned char zero = 0;
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, &zero, 1);
    SHA256_Update(&ctx, leaf, (size_t)n);
    SHA256_Final(out, &ctx);
}

/* bulk(buf, p, q, expect, prev, seen, first, hashes) -> (m, first_index, first_prev_hex, end)
 *
 * Accept the lines of buf[p:q] in order while each is a plain entry line: at index
 * ``expect`` and chained onto ``prev`` (the previous leaf hash), or, with expect < 0, the
 * first entry of a range (its index and prev are returned). For each accepted line: its
 * leaf hash is appended to ``hashes`` and the subject back-pointers are checked and
 * recorded in ``seen`` (subject -> index) and ``first`` (subject -> first prev_subject)
 * as Scanner.bulk does. A line that is not accepted changes nothing; ``end`` is its
 * offset (q when every line was accepted). */
static PyObject *
bulk(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t p, q;
    long long expect;
    Py_buffer prev;
    PyObject *seen, *first, *hashes;
    if (!PyArg_ParseTuple(args, "y*nnLy*O!O!O!", &buf, &p, &q, &expect, &prev, &PyDict_Type,
                          &seen, &PyDict_Type, &first, &PyByteArray_Type, &hashes))
        return NULL;
    PyObject *result = NULL, *first_prev = NULL;
    unsigned char *scratch = NULL;
    unsigned char last[HASH], last_hex[2 * HASH];
    int have_last = 0;
    long long first_index = -1;
    Py_ssize_t m = 0;
    if (p < 0 || q > buf.len || p > q) {
        PyErr_SetString(PyExc_ValueError, "bad range");
        goto done;
    }
    if (expect >= 0) {
        if (prev.len != HASH) {
            PyErr_SetString(PyExc_ValueError, "prev must be a 32-byte hash");
            goto done;
        }
        memcpy(last, prev.buf, HASH);
        have_last = 1;
    }
    scratch = PyMem_Malloc((size_t)(q - p) + 1);
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *data = buf.buf;
    while (p < q) {
        const unsigned char *line = data + p;
        const unsigned char *nl = memchr(line, '\n', (size_t)(q - p));
        if (nl == NULL)
            break;
        Py_ssize_t len = nl - line;
        Py_ssize_t at = line_head(line, len);
        if (at < 0 || len - at < 2 || line[len - 1] != '}' || line[len - 2] != '"')
            break;
        const unsigned char *b64 = line + at;
        Py_ssize_t b64_n = len - 2 - at;
        if (memchr(b64, '"', (size_t)b64_n) != NULL)
            break;
        Py_ssize_t n = b64_decode(b64, b64_n, scratch);
        if (n < 0)
            break;
        Leaf f;
        if (!parse_leaf(scratch, n, &f))
            break;
        if (have_last) {
            if (expect < 0 || f.index != expect)
                break;
            for (int i = 0; i < HASH; i++) {
                last_hex[2 * i] = (unsigned char)HEX[last[i] >> 4];
                last_hex[2 * i + 1] = (unsigned char)HEX[last[i] & 15];
            }
            if (memcmp(f.prev, last_hex, 2 * HASH) != 0)
                break;
        }
        /* Back-pointers: the same decisions as Scanner.bulk, made before any change. */
        PyObject *subject = NULL, *ptr = NULL, *idx = NULL;
        int first_seen = 0;
        if (f.subject == NULL) {
            if (f.ptr_n != 4 || memcmp(f.ptr, "null", 4) != 0)
                break;
        } else {
            subject = PyBytes_FromStringAndSize((const char *)f.subject, 64);
            ptr = PyBytes_FromStringAndSize((const char *)f.ptr, f.ptr_n);
            idx = PyBytes_FromStringAndSize((const char *)f.idx, f.idx_n);
            if (subject == NULL || ptr == NULL || idx == NULL)
                goto fail_line;
            PyObject *known = PyDict_GetItemWithError(seen, subject); /* borrowed */
            if (known == NULL) {
                if (PyErr_Occurred())
                    goto fail_line;
                first_seen = 1;
            } else {
                int same = PyObject_RichCompareBool(known, ptr, Py_EQ);
                if (same < 0)
                    goto fail_line;
                if (!same) {
                    Py_DECREF(subject);
                    Py_DECREF(ptr);
                    Py_DECREF(idx);
                    break;
                }
            }
        }
        /* Accepted: record it. */
        if (first_index < 0) {
            first_index = f.index;
            first_prev = PyBytes_FromStringAndSize((const char *)f.prev, 64);
            if (first_prev == NULL)
                goto fail_line;
        }
        if (subject != NULL) {
            if ((first_seen && PyDict_SetItem(first, subject, ptr) < 0)
                || PyDict_SetItem(seen, subject, idx) < 0)
                goto fail_line;
            Py_DECREF(subject);
            Py_DECREF(ptr);
            Py_DECREF(idx);
        }
        leaf_hash(scratch, n, last);
        if (PyByteArray_Resize(hashes, PyByteArray_GET_SIZE(hashes) + HASH) < 0)
            goto done;
        memcpy(PyByteArray_AS_STRING(hashes) + PyByteArray_GET_SIZE(hashes) - HASH, last,
               HASH);
        have_last = 1;
        expect = f.index + 1;
        m++;
        p += len + 1;
        continue;
    fail_line:
        Py_XDECREF(subject);
        Py_XDECREF(ptr);
        Py_XDECREF(idx);
        goto done;
    }
    result = Py_BuildValue("nLOn", m, first_index,
                           first_prev != NULL ? first_prev : Py_None, p);
done:
    Py_XDECREF(first_prev);
    PyMem_Free(scratch);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&prev);
    return result;
}

/* levels(start, hashes) -> [(first, row), ...]: scan._levels over a buffer of digests;
 * each row is the concatenated 32-byte hashes of the complete aligned subtrees at that
 * level inside [start, start + len(hashes) // 32), ``first`` the first one's index. */
static PyObject *
levels(PyObject *self, PyObject *args)
{
    long long first;
    Py_buffer hashes;
    if (!PyArg_ParseTuple(args, "Ly*", &first, &hashes))
        return NULL;
    PyObject *out = PyList_New(0);
    PyObject *row = NULL;
    if (out == NULL || hashes.len % HASH || first < 0)
        goto fail;
    row = PyBytes_FromStringAndSize(hashes.buf, hashes.len);
    while (row != NULL && PyBytes_GET_SIZE(row) > 0) {
        PyObject *item = Py_BuildValue("LO", first, row);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
        Py_ssize_t n = PyBytes_GET_SIZE(row) / HASH;
        int odd = (int)(first & 1);
        Py_ssize_t pairs = (n - odd) / 2;
        PyObject *next = PyBytes_FromStringAndSize(NULL, pairs * HASH);
        if (next == NULL)
            goto fail;
        const unsigned char *src = (const unsigned char *)PyBytes_AS_STRING(row) + odd * HASH;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(next);
        static const unsigned char one = 1;
        for (Py_ssize_t i = 0; i < pairs; i++) {
            SHA256_CTX ctx;  /* not SHA256(): in OpenSSL 3 that one goes through EVP */
            SHA256_Init(&ctx);
            SHA256_Update(&ctx, &one, 1);
            SHA256_Update(&ctx, src + 2 * i * HASH, 2 * HASH);
            SHA256_Final(dst + i * HASH, &ctx);
        }
        Py_DECREF(row);
        row = next;
        first = (first + odd) >> 1;
    }
    if (row == NULL)
        goto fail;
    Py_DECREF(row);
    PyBuffer_Release(&hashes);
    return out;
fail:
    if (out != NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "hashes must be whole 32-byte digests");
    Py_XDECREF(row);
    Py_XDECREF(out);
    PyBuffer_Release(&hashes);
    return NULL;
}

static PyMethodDef methods[] = {
    {"bulk", bulk, METH_VARARGS, "Accept plain entry lines; see scan.Scanner.bulk."},
    {"levels", levels, METH_VARARGS, "scan._levels over a buffer of 32-byte digests."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The audit's block scanner in C (optional).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    init_b64();
    return PyModule_Create(&module);
}
