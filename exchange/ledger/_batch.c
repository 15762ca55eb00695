/* A writer batch's leaves in C: exchange.ledger._batch.
 *
 * An optional accelerator for LeafBatch.columns in exchange/ledger/leaves.py, which stays the
 * reference. leaves() takes a batch's events as plain field tuples and does, for each in
 * index order, what the Python loop does: the leaf's canonical JSON, its RFC 6962 hash, the
 * hash chain, the frontier and the new subtree hashes — and it writes the PostgreSQL
 * binary COPY data of the entry rows and of the new subtree rows as it goes.
 *
 * Only plain events: every string field made of printable ASCII other than '"' and '\'
 * (for those, orjson's canonical JSON is the characters between two quotes, so the bytes
 * cannot differ from encode_leaf's); anything else returns None and the Python loop runs.
 * The JSON keys are the leaf's fields in sorted order, as OPT_SORT_KEYS writes them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define HASH 32
#define NFIELDS 9 /* Event: kind, actor, outcome, subject, item, certificate, consent,
                     reason, request_sha256 */
enum { F_KIND, F_ACTOR, F_OUTCOME, F_SUBJECT, F_ITEM, F_CERT, F_CONSENT, F_REASON, F_REQ };

static const char HEX[] = "0123456789abcdef";
static const char COPY_HEADER[] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
#define COPY_HEADER_LEN 19

/* A growable byte buffer. */
typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int
buf_put(Buf *b, const void *s, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}

static int
buf_be(Buf *b, uint64_t v, int width)
{
    unsigned char out[8];
    for (int i = 0; i < width; i++)
        out[i] = (unsigned char)(v >> (8 * (width - 1 - i)));
    return buf_put(b, out, width);
}

/* One COPY field: its length (or -1 for NULL) and its bytes. */
static int
copy_field(Buf *b, const void *s, Py_ssize_t n)
{
    if (s == NULL)
        return buf_be(b, (uint32_t)-1, 4);
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "field too long for COPY");
        return -1;
    }
    if (buf_be(b, (uint32_t)n, 4) < 0)
        return -1;
    return buf_put(b, s, n);
}

static int
copy_int8(Buf *b, long long v)
{
    return buf_be(b, 8, 4) < 0 ? -1 : buf_be(b, (uint64_t)v, 8);
}

/* leaf.subject_prefix: a pseudonym's first 16 hex digits as a signed bigint (its COPY
 * field is the 64 bits as they are), or NULL for no subject. */
static int
copy_subject_prefix(Buf *b, const char *s, Py_ssize_t n, int none)
{
    if (none)
        return copy_field(b, NULL, 0);
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < 16; i++) {
        char c = i < n ? s[i] : 0;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) {
            PyErr_SetString(PyExc_ValueError, "subject: not a pseudonym");
            return -1;
        }
        v = v << 4 | (uint64_t)d;
    }
    return buf_be(b, 8, 4) < 0 ? -1 : buf_be(b, v, 8);
}

/* The field's ASCII bytes when it is a plain str (printable ASCII, no '"' or '\'); sets
 * *none for None. NULL with no error set: not plain (the caller falls back). */
static const char *
plain(PyObject *o, Py_ssize_t *n, int *none)
{
    *none = 0;
    if (o == Py_None) {
        *none = 1;
        *n = 0;
        return "";
    }
    if (!PyUnicode_CheckExact(o) || !PyUnicode_IS_ASCII(o))
        return NULL;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(o);
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return NULL;
    }
    *n = len;
    return s;
}

static int
json_str(Buf *b, const char *key, const char *s, Py_ssize_t n, int none)
{
    if (buf_put(b, key, (Py_ssize_t)strlen(key)) < 0)
        return -1;
    if (none)
        return buf_put(b, "null", 4);
    if (buf_put(b, "\"", 1) < 0 || buf_put(b, s, n) < 0)
        return -1;
    return buf_put(b, "\"", 1);
}

static int
json_int(Buf *b, const char *key, long long v)
{
    char num[24];
    int k = snprintf(num, sizeof num, "%lld", v);
    if (buf_put(b, key, (Py_ssize_t)strlen(key)) < 0)
        return -1;
    return buf_put(b, num, k);
}

static void
node_hash(const unsigned char *left, const unsigned char *right, unsigned char *out)
{
    SHA256_CTX c;
    static const unsigned char one = 1;
    SHA256_Init(&c);
    SHA256_Update(&c, &one, 1);
    SHA256_Update(&c, left, HASH);
    SHA256_Update(&c, right, HASH);
    SHA256_Final(out, &c);
}

typedef struct {
    int level;
    long long idx;
    unsigned char hash[HASH];
} Node;

/* leaves(fields, refs, start, prev, time_ms, node, prev_subjects, frontier, stratum)
 *   -> None | (leaves, hashes, frontier, new_nodes, entries_copy, nodes_copy)
 * refs: each row's stored ref, a str or None (NULL). new_nodes and nodes_copy hold only the
 * new subtrees at levels that are multiples of stratum (the stored ones: store.STRATUM). */
static PyObject *
leaves(PyObject *self, PyObject *args)
{
    PyObject *fields, *refs, *prev_subjects, *frontier, *node_obj;
    long long start, time_ms;
    int stratum;
    Py_buffer prev;
    if (!PyArg_ParseTuple(args, "O!O!Ly*LUO!O!i", &PyList_Type, &fields, &PyList_Type, &refs,
                          &start, &prev, &time_ms, &node_obj, &PyList_Type, &prev_subjects,
                          &PyList_Type, &frontier, &stratum))
        return NULL;
    if (stratum < 1) {
        PyBuffer_Release(&prev);
        PyErr_SetString(PyExc_ValueError, "stratum must be positive");
        return NULL;
    }
    PyObject *result = NULL, *leaf_list = NULL, *hash_list = NULL, *front_out = NULL,
             *new_list = NULL;
    Buf leaf = {0}, entries = {0}, nodes = {0};
    Node *stack = NULL;
    Py_ssize_t n = PyList_GET_SIZE(fields), nfront = PyList_GET_SIZE(frontier);
    Py_ssize_t node_len;
    int none;
    const char *node = plain(node_obj, &node_len, &none);

    if (prev.len != HASH || PyList_GET_SIZE(refs) != n || PyList_GET_SIZE(prev_subjects) != n
        || start < 0) {
        PyErr_SetString(PyExc_ValueError, "bad arguments");
        goto done;
    }
    if (node == NULL || none) { /* not plain: the Python loop */
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* Every event plain, before anything is built. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(fields, i);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != NFIELDS) {
            PyErr_SetString(PyExc_ValueError, "fields: tuples of 9");
            goto done;
        }
        for (int f = 0; f < NFIELDS; f++) {
            Py_ssize_t len;
            if (plain(PyTuple_GET_ITEM(t, f), &len, &none) == NULL) {
                result = Py_NewRef(Py_None);
                goto done;
            }
        }
        PyObject *ps = PyList_GET_ITEM(prev_subjects, i);
        if (ps != Py_None && !PyLong_CheckExact(ps)) {
            PyErr_SetString(PyExc_ValueError, "prev_subjects: int or None");
            goto done;
        }
        PyObject *r = PyList_GET_ITEM(refs, i);
        if (r != Py_None && !PyUnicode_Check(r)) {
            PyErr_SetString(PyExc_ValueError, "refs: str or None");
            goto done;
        }
    }
    /* The frontier, plus room for every leaf and merge. */
    stack = PyMem_Malloc(sizeof(Node) * (size_t)(nfront + 66));
    if (stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < nfront; k++) {
        PyObject *t = PyList_GET_ITEM(frontier, k);
        int level;
        long long idx;
        Py_buffer h;
        if (!PyTuple_Check(t) || !PyArg_ParseTuple(t, "iLy*", &level, &idx, &h))
            goto done;
        int ok = h.len == HASH;
        if (ok)
            memcpy(stack[k].hash, h.buf, HASH);
        PyBuffer_Release(&h);
        if (!ok || level < 0 || level > 62) {
            PyErr_SetString(PyExc_ValueError, "frontier: (level, index, 32-byte hash)");
            goto done;
        }
        stack[k].level = level;
        stack[k].idx = idx;
    }
    Py_ssize_t top = nfront;
    if (!(leaf_list = PyList_New(n)) || !(hash_list = PyList_New(n)) ||
        !(new_list = PyList_New(0)))
        goto done;
    if (buf_put(&entries, COPY_HEADER, COPY_HEADER_LEN) < 0 ||
        buf_put(&nodes, COPY_HEADER, COPY_HEADER_LEN) < 0)
        goto done;

    unsigned char last[HASH];
    memcpy(last, prev.buf, HASH);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(fields, i);
        const char *s[NFIELDS];
        Py_ssize_t len[NFIELDS];
        int nul[NFIELDS];
        for (int f = 0; f < NFIELDS; f++)
            s[f] = plain(PyTuple_GET_ITEM(t, f), &len[f], &nul[f]);
        long long index = start + i;
        PyObject *ps = PyList_GET_ITEM(prev_subjects, i);
        char prev_hex[2 * HASH];
        for (int k = 0; k < HASH; k++) {
            prev_hex[2 * k] = HEX[last[k] >> 4];
            prev_hex[2 * k + 1] = HEX[last[k] & 15];
        }
        leaf.n = 0;
        if (json_str(&leaf, "{\"actor\":", s[F_ACTOR], len[F_ACTOR], nul[F_ACTOR]) < 0 ||
            json_str(&leaf, ",\"certificate\":", s[F_CERT], len[F_CERT], nul[F_CERT]) < 0 ||
            json_str(&leaf, ",\"consent\":", s[F_CONSENT], len[F_CONSENT], nul[F_CONSENT]) < 0 ||
            json_int(&leaf, ",\"index\":", index) < 0 ||
            json_str(&leaf, ",\"item\":", s[F_ITEM], len[F_ITEM], nul[F_ITEM]) < 0 ||
            json_str(&leaf, ",\"kind\":", s[F_KIND], len[F_KIND], nul[F_KIND]) < 0 ||
            json_str(&leaf, ",\"node\":", node, node_len, 0) < 0 ||
            json_str(&leaf, ",\"outcome\":", s[F_OUTCOME], len[F_OUTCOME], nul[F_OUTCOME]) < 0 ||
            json_str(&leaf, ",\"prev\":", prev_hex, 2 * HASH, 0) < 0)
            goto done;
        if (ps == Py_None) {
            if (buf_put(&leaf, ",\"prev_subject\":null", 20) < 0)
                goto done;
        }
        else {
            long long v = PyLong_AsLongLong(ps);
            if (v == -1 && PyErr_Occurred())
                goto done;
            if (json_int(&leaf, ",\"prev_subject\":", v) < 0)
                goto done;
        }
        if (json_str(&leaf, ",\"reason\":", s[F_REASON], len[F_REASON], nul[F_REASON]) < 0 ||
            json_str(&leaf, ",\"request_sha256\":", s[F_REQ], len[F_REQ], nul[F_REQ]) < 0 ||
            json_str(&leaf, ",\"subject\":", s[F_SUBJECT], len[F_SUBJECT], nul[F_SUBJECT]) < 0 ||
            json_int(&leaf, ",\"time_ms\":", time_ms) < 0 ||
            buf_put(&leaf, ",\"v\":1}", 7) < 0)
            goto done;
        /* RFC 6962 leaf hash: SHA-256(0x00 || leaf). */
        unsigned char h[HASH];
        SHA256_CTX c;
        static const unsigned char zero = 0;
        SHA256_Init(&c);
        SHA256_Update(&c, &zero, 1);
        SHA256_Update(&c, leaf.p, (size_t)leaf.n);
        SHA256_Final(h, &c);
        PyObject *lb = PyBytes_FromStringAndSize(leaf.p, leaf.n);
        if (lb == NULL)
            goto done;
        PyList_SET_ITEM(leaf_list, i, lb);
        PyObject *hb = PyBytes_FromStringAndSize((const char *)h, HASH);
        if (hb == NULL)
            goto done;
        PyList_SET_ITEM(hash_list, i, hb);
        /* The entry row: idx, leaf, leaf_hash, ref, kind, actor, subject, time_ms,
         * subject_prefix. */
        /* A ref of None (a direct event's: not stored) is a NULL. */
        Py_ssize_t ref_len = 0;
        const char *ref = NULL;
        if (PyList_GET_ITEM(refs, i) != Py_None) {
            ref = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(refs, i), &ref_len);
            if (ref == NULL)
                goto done;
        }
        if (buf_be(&entries, 9, 2) < 0 || copy_int8(&entries, index) < 0 ||
            copy_field(&entries, leaf.p, leaf.n) < 0 || copy_field(&entries, h, HASH) < 0 ||
            copy_field(&entries, ref, ref_len) < 0 ||
            copy_field(&entries, nul[F_KIND] ? NULL : s[F_KIND], len[F_KIND]) < 0 ||
            copy_field(&entries, nul[F_ACTOR] ? NULL : s[F_ACTOR], len[F_ACTOR]) < 0 ||
            copy_field(&entries, nul[F_SUBJECT] ? NULL : s[F_SUBJECT], len[F_SUBJECT]) < 0 ||
            copy_int8(&entries, time_ms) < 0 ||
            copy_subject_prefix(&entries, s[F_SUBJECT], len[F_SUBJECT], nul[F_SUBJECT]) < 0)
            goto done;
        /* The frontier: push the leaf, merge equal levels; each merge is a new node. */
        stack[top].level = 0;
        stack[top].idx = index;
        memcpy(stack[top].hash, h, HASH);
        top++;
        while (top > 1 && stack[top - 1].level == stack[top - 2].level) {
            Node *l = &stack[top - 2], *r = &stack[top - 1];
            Node parent;
            parent.level = l->level + 1;
            parent.idx = l->idx >> 1;
            node_hash(l->hash, r->hash, parent.hash);
            top -= 2;
            stack[top++] = parent;
            if (parent.level % stratum != 0)
                continue; /* not a stored level */
            PyObject *nt = Py_BuildValue("(iLy#)", parent.level, parent.idx,
                                         (const char *)parent.hash, (Py_ssize_t)HASH);
            if (nt == NULL || PyList_Append(new_list, nt) < 0) {
                Py_XDECREF(nt);
                goto done;
            }
            Py_DECREF(nt);
            if (buf_be(&nodes, 3, 2) < 0 || buf_be(&nodes, 2, 4) < 0 ||
                buf_be(&nodes, (uint64_t)parent.level, 2) < 0 ||
                copy_int8(&nodes, parent.idx) < 0 || copy_field(&nodes, parent.hash, HASH) < 0)
                goto done;
        }
        if (top > nfront + 64) { /* a frontier never holds more than 63 subtrees */
            PyErr_SetString(PyExc_ValueError, "frontier is not a tree's decomposition");
            goto done;
        }
        memcpy(last, h, HASH);
    }
    if (buf_be(&entries, (uint16_t)-1, 2) < 0 || buf_be(&nodes, (uint16_t)-1, 2) < 0)
        goto done;
    if (!(front_out = PyList_New(top)))
        goto done;
    for (Py_ssize_t k = 0; k < top; k++) {
        PyObject *nt = Py_BuildValue("(iLy#)", stack[k].level, stack[k].idx,
                                     (const char *)stack[k].hash, (Py_ssize_t)HASH);
        if (nt == NULL)
            goto done;
        PyList_SET_ITEM(front_out, k, nt);
    }
    result = Py_BuildValue("(OOOOy#y#)", leaf_list, hash_list, front_out, new_list, entries.p,
                           entries.n, nodes.p, nodes.n);
done:
    PyBuffer_Release(&prev);
    Py_XDECREF(leaf_list);
    Py_XDECREF(hash_list);
    Py_XDECREF(front_out);
    Py_XDECREF(new_list);
    PyMem_Free(leaf.p);
    PyMem_Free(entries.p);
    PyMem_Free(nodes.p);
    PyMem_Free(stack);
    return result;
}

static PyMethodDef methods[] = {
    {"leaves", leaves, METH_VARARGS,
     "leaves(fields, refs, start, prev, time_ms, node, prev_subjects, frontier, stratum) -> "
     "None | "
     "(leaves, hashes, frontier, new_nodes, entries_copy, nodes_copy)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_batch", "A writer batch's leaves in C (see leaves.py).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__batch(void)
{
    return PyModule_Create(&module);
}
