"""``certex ledger export`` and ``certex audit verify`` (DESIGN.md §2.5, §5).

A real node fills its ledger over HTTP (issuances and status changes); an auditor keeps the
checkpoints it sees. Then the database is tampered with through plain SQL, the way an
operator with database access would, the ledger is exported again, and the offline audit
must exit 1 naming the first bad index and the problem; the untouched ledger exits 0.
A few runs go through a real ``certex`` subprocess. The unit tests at the end feed the
audit malformed and hand-crafted exports.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text
from typer.testing import CliRunner

from exchange.cli.main import app
from exchange.crypto.canonical import canonical_json
from exchange.ledger import export, merkle, store
from exchange.ledger.audit import AuditFailed, audit_export
from exchange.ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from exchange.ledger.export import checkpoint_line, entry_line, export_ledger, header_line
from exchange.ledger.leaf import Event, encode_leaf, pseudonym
from exchange.ledger.note import Signer, Verifier
from exchange.ledger.writer import ledger_signer, origin_of
from tests.conftest import BASE_URL, TEST_PASSPHRASE, TEST_SUBJECT_KEY
from tests.helpers import BUSINESS_LICENSE, access_token, add_agency, bearer, new_uscc

CERTEX = Path(sys.executable).parent / "certex"


@dataclass
class Ledger:
    """The filled ledger and what the auditor kept: the vkey and checkpoints at two sizes."""

    size: int
    vkey: str
    early: str  # checkpoint note kept at size 5
    older: str  # checkpoint note kept at size 14
    tmp: Path


@pytest.fixture
def ledger(http, node, tmp_path) -> Ledger:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    token = access_token(http, node, agency)
    subjects = [new_uscc(f"audit-{i}") for i in range(6)]
    kept: dict[int, str] = {}
    ids = []
    for i in range(20):
        r = http.post(
            "/v1/certificates",
            headers=bearer(token),
            json={
                "type": "business-license",
                "subject_id": subjects[i % 6],
                "claims": BUSINESS_LICENSE,
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        if i + 1 in (5, 14):
            kept[i + 1] = http.get("/v1/ledger/checkpoint").text
    for cert, status in ((ids[1], "suspended"), (ids[1], "valid"), (ids[7], "revoked")):
        r = http.post(
            f"/v1/certificates/{cert}/status",
            headers=bearer(token),
            json={"status": status, "reason": "核查"},
        )
        assert r.status_code == 200, r.text
    pointers = [_field(raw, "prev_subject") for _, raw in sorted(_leaves(node).items())]
    assert pointers == [None] * 6 + list(range(14)) + [19, 20, 21]
    vkey = http.get("/v1/ledger/vkey").text.strip()
    for size, note in kept.items():
        assert open_checkpoint(note, Verifier.from_vkey(vkey)).size == size
    return Ledger(23, vkey, kept[5], kept[14], tmp_path)


# -- helpers: export, audit, tamper ------------------------------------------------------------


def _export(node: Any, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        export_ledger(node, f)
    return path


def _verify(lg: Ledger, export: Path, *checkpoints: str) -> tuple[int, str]:
    """``certex audit verify`` in-process (typer's CliRunner): exit code and stdout."""
    args = ["audit", "verify", str(export), "--vkey", lg.vkey]
    for n, note in enumerate(checkpoints):
        path = lg.tmp / f"checkpoint-{n}.txt"
        path.write_text(note, encoding="utf-8")
        args += ["--checkpoint", str(path)]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout


def _certex(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """A real ``certex`` process (``stdin``: bytes piped to it)."""
    done = subprocess.run(
        [str(CERTEX), *args], capture_output=True, timeout=120, env=env, check=False, input=stdin
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def _leaves(node: Any) -> dict[int, bytes]:
    with node.engine.connect() as conn:
        return {i: bytes(b) for i, b in conn.execute(text("SELECT idx, leaf FROM ledger_entries"))}


def _sql(node: Any, sql: str, **params: Any) -> None:
    with node.engine.begin() as conn:
        conn.execute(text(sql), params)


def _set_leaf(node: Any, index: int, leaf: bytes) -> None:
    _sql(node, "UPDATE ledger_entries SET leaf = :leaf WHERE idx = :i", leaf=leaf, i=index)


def _edited(raw: bytes, **fields: Any) -> bytes:
    return canonical_json({**orjson.loads(raw), **fields})


def _field(raw: bytes, name: str) -> Any:
    return orjson.loads(raw)[name]


# -- the untouched ledger ------------------------------------------------------------------------


def test_untouched_export_verifies_in_a_real_process(node, settings, ledger, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`certex ledger export` and `certex audit verify` as an operator and an auditor run them."""
    env = {
        **os.environ,
        "CERTEX_DATABASE_URL": settings.database_url,
        "CERTEX_HOME": str(settings.home),
        "CERTEX_BASE_URL": BASE_URL,
        "CERTEX_NODE": "31",
        "CERTEX_KEY_PASSPHRASE": TEST_PASSPHRASE,
        "CERTEX_SUBJECT_KEY": TEST_SUBJECT_KEY,
    }
    export = tmp_path / "ledger.jsonl"
    done = _certex("ledger", "export", "--out", str(export), env=env)
    assert done.returncode == 0, done.stderr
    lines = export.read_text(encoding="utf-8").splitlines()
    assert orjson.loads(lines[0]) == {
        "format": "certex-ledger-export/1",
        "origin": "node31.certex.test/ledger",
        "node": "31",
        "size": ledger.size,
    }
    assert [orjson.loads(x)["index"] for x in lines[1:-1]] == list(range(ledger.size))
    stored = _leaves(node)
    assert all(
        base64.b64decode(orjson.loads(x)["leaf"]) == stored[i] for i, x in enumerate(lines[1:-1])
    )
    assert (
        open_checkpoint(orjson.loads(lines[-1])["checkpoint"], Verifier.from_vkey(ledger.vkey)).size
        == ledger.size
    )
    # The auditor's side needs no database and no node settings; the vkey may be a file.
    vkey_file = tmp_path / "vkey.txt"
    vkey_file.write_text(ledger.vkey + "\n", encoding="utf-8")
    older = tmp_path / "older.txt"
    older.write_text(ledger.older, encoding="utf-8")
    bare_env = {k: v for k, v in os.environ.items() if not k.startswith("CERTEX_")}
    args = [str(export), "--vkey", str(vkey_file), "--checkpoint", str(older)]
    ok = _certex("audit", "verify", *args, env=bare_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"OK node31.certex.test/ledger: {ledger.size} entries")
    assert "extends older checkpoints: 14" in ok.stdout
    # Piped: `certex ledger export --out - | certex audit verify -`, the same verdict.
    args[0] = "-"
    piped = _certex("audit", "verify", *args, env=bare_env, stdin=export.read_bytes())
    assert (piped.returncode, piped.stdout) == (0, ok.stdout), piped.stderr


def test_untouched_export_verifies_with_every_kept_checkpoint(node, ledger) -> None:  # type: ignore[no-untyped-def]
    export = _export(node, ledger.tmp / "e.jsonl")
    assert _verify(ledger, export, ledger.early, ledger.older)[0] == 0
    with export.open(encoding="utf-8") as f:
        report = audit_export(
            f,
            verifier=Verifier.from_vkey(ledger.vkey),
            older_checkpoint=[ledger.older, ledger.early],
        )
    assert report.checkpoint.size == ledger.size
    assert [c.size for c in report.consistent_with] == [5, 14]
    assert report.subjects == 6


def test_export_holds_exactly_the_signed_entries(node, ledger) -> None:  # type: ignore[no-untyped-def]
    """Entries appended after the latest checkpoint was read are not in the export."""
    _sql(node, "DELETE FROM ledger_checkpoints WHERE size > 20")  # entries 20..22 look unsigned
    seen: list[tuple[int, int]] = []
    out = io.StringIO()
    summary = export_ledger(node, out, lambda done, total: seen.append((done, total)))
    assert (summary.size, summary.entries) == (20, 20)
    assert seen[0] == (0, 20) and seen[-1] == (20, 20)
    report = audit_export(
        io.StringIO(out.getvalue()),
        verifier=Verifier.from_vkey(ledger.vkey),
        older_checkpoint=ledger.older,
    )
    assert report.checkpoint.size == 20


def test_export_streams_in_batches_of_the_stored_rows(node, ledger, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Batches of 4 (PostgreSQL: psycopg's binary cursor; SQLite: SQLAlchemy), the bound
    respected, a deleted row simply absent, the lines as the format says."""
    leaves = _leaves(node)
    with node.engine.connect() as conn:
        batches = list(store.entry_batches(conn, 22, 4))
        assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 2]
        assert [r for b in batches for r in b] == [(i, leaves[i]) for i in range(22)]
        assert all(type(i) is int and type(x) is bytes for b in batches for i, x in b)
        assert [e.index for e in store.iter_entries(conn, 5)] == list(range(23))
    _sql(node, "DELETE FROM ledger_entries WHERE idx = 9")
    monkeypatch.setattr(export, "EXPORT_BATCH", 4)
    seen: list[tuple[int, int]] = []
    out = io.StringIO()
    summary = export_ledger(node, out, lambda done, total: seen.append((done, total)))
    assert (summary.size, summary.entries) == (23, 22)
    lines = out.getvalue().splitlines(keepends=True)
    assert lines[1:-1] == [  # the format, spelled out with the stdlib's base64
        f'{{"index":{i},"leaf":"{base64.b64encode(leaves[i]).decode()}"}}\n'
        for i in range(23)
        if i != 9
    ]
    assert seen == [(0, 23), *((n, 23) for n in (4, 8, 12, 16, 20, 22)), (22, 23)]


# -- tampering through SQL: the first bad index and the problem ------------------------------


def test_edited_entry_is_named_in_a_real_process(node, ledger) -> None:  # type: ignore[no-untyped-def]
    leaves = _leaves(node)
    _set_leaf(node, 9, _edited(leaves[9], actor="someone-else"))
    export = _export(node, ledger.tmp / "e.jsonl")
    done = _certex("audit", "verify", str(export), "--vkey", ledger.vkey)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.strip() == (
        "FAIL index 9: edited — entry 10's prev does not match the hash of entry 9; "
        "entry 11 still chains onto 10"
    )
    piped = _certex("audit", "verify", "-", "--vkey", ledger.vkey, stdin=export.read_bytes())
    assert (piped.returncode, piped.stdout) == (1, done.stdout)
    bad = _certex("audit", "verify", "-", "--vkey", ledger.vkey, stdin=b"\xff\n")
    assert bad.returncode == 1 and "not UTF-8" in bad.stdout, bad.stdout + bad.stderr


def _swap(node: Any, leaves: dict[int, bytes], a: int, b: int) -> None:
    _set_leaf(node, a, leaves[b])
    _set_leaf(node, b, leaves[a])


def _other_key_checkpoint(node: Any, leaves: dict[int, bytes]) -> None:
    impostor = Signer(origin_of(node), Ed25519PrivateKey.generate())
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(leaves[i]) for i in sorted(leaves)])
    note = sign_checkpoint(Checkpoint(origin_of(node), len(leaves), root), impostor)
    _sql(node, "UPDATE ledger_checkpoints SET note = :n WHERE size = :s", n=note, s=len(leaves))


def _edited_checkpoint(node: Any, leaves: dict[int, bytes]) -> None:
    n = len(leaves)
    _sql(
        node,
        "UPDATE ledger_checkpoints SET note = replace(note, :a, :b) WHERE size = :s",
        a=f"\n{n}\n",
        b=f"\n{n - 2}\n",
        s=n,
    )


# The ledger: entries 0..19 issue to subject i % 6 (so entry i >= 6 points back to i - 6),
# 20..22 change the status of subject 1's certificates (pointing back to 19, 20, 21).
TAMPERING = {
    "edited actor": (
        lambda node, lv: _set_leaf(node, 12, _edited(lv[12], actor="x")),
        "index 12: edited — entry 13's prev does not match the hash of entry 12; entry 14 still chains onto 13",
    ),
    "edited time": (
        lambda node, lv: _set_leaf(node, 0, _edited(lv[0], time_ms=1)),
        "index 0: edited — entry 1's prev does not match the hash of entry 0; entry 2 still chains onto 1",
    ),
    "edited subject": (
        lambda node, lv: _set_leaf(node, 12, _edited(lv[12], subject="ab" * 32)),
        "index 12: edited — entry 12 has prev_subject 6, but its subject has no earlier entry",
    ),
    "edited prev": (
        lambda node, lv: _set_leaf(node, 8, _edited(lv[8], prev="11" * 32)),
        "index 8: edited — entry 8's prev does not match the hash of entry 7, and entry 9's prev does not match entry 8",
    ),
    "edited index": (
        lambda node, lv: _set_leaf(node, 5, _edited(lv[5], index=50)),
        "index 5: edited — entry 5 chains onto the hash of entry 4 but says it is 50",
    ),
    "not canonical": (
        lambda node, lv: _set_leaf(node, 3, lv[3].replace(b'","', b'", "', 1)),
        "index 3: edited — entry 3 is not a valid ledger leaf: leaf bytes are not canonical JSON",
    ),
    "edited last": (  # nothing chains onto the last entry: only the signed root shows it
        lambda node, lv: _set_leaf(node, 22, _edited(lv[22], reason="changed")),
        "index 22: edited — every link holds, but the entries miss the signed root: entry 22 (or a run re-chained up to it) changed; no earlier checkpoint kept",
    ),
    "wrong back-pointer": (
        lambda node, lv: _set_leaf(node, 10, _edited(lv[10], prev_subject=3)),
        "index 10: edited — entry 10 has prev_subject 3, but its subject's previous entry is 4",
    ),
    "dropped back-pointer": (
        lambda node, lv: _set_leaf(node, 21, _edited(lv[21], prev_subject=None)),
        "index 21: edited — entry 21 has prev_subject null, but its subject's previous entry is 20",
    ),
    "deleted": (
        lambda node, lv: _sql(node, "DELETE FROM ledger_entries WHERE idx = 7"),
        "index 7: missing — entry 7 is missing: the next entry present is 8",
    ),
    "deleted run": (
        lambda node, lv: _sql(node, "DELETE FROM ledger_entries WHERE idx >= 4 AND idx < 7"),
        "index 4: missing — entries 4..6 are missing: the next entry present is 7",
    ),
    "deleted last": (
        lambda node, lv: _sql(node, "DELETE FROM ledger_entries WHERE idx = 22"),
        "index 22: missing — the checkpoint commits to 23 entries, the export stops at 22",
    ),
    "swapped": (
        lambda node, lv: _swap(node, lv, 10, 11),
        "index 10: reordered — entry 10 is at position 11; position 10 holds 11",
    ),
    "moved": (
        lambda node, lv: _swap(node, lv, 2, 16),
        "index 2: reordered — entry 2 is at position 16; position 2 holds 16",
    ),
    "checkpoint by another key": (
        _other_key_checkpoint,
        "checkpoint: bad-signature — the checkpoint does not verify: note has no signature from a trusted key",
    ),
    "checkpoint edited": (
        _edited_checkpoint,
        "checkpoint: bad-signature — the checkpoint does not verify: bad signature from note key node31.certex.test/ledger",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_names_the_first_bad_index(node, ledger, case) -> None:  # type: ignore[no-untyped-def]
    tamper, expected = TAMPERING[case]
    tamper(node, _leaves(node))
    code, out = _verify(ledger, _export(node, ledger.tmp / "e.jsonl"))
    assert (code, out.strip()) == (1, f"FAIL {expected}")


def test_truncated_tail(node, ledger) -> None:  # type: ignore[no-untyped-def]
    """The operator deletes the tail and the checkpoints above it: the export alone verifies,
    but not against the checkpoint of size 14 the auditor kept."""
    _sql(node, "DELETE FROM ledger_entries WHERE idx >= 11")
    _sql(node, "DELETE FROM ledger_checkpoints WHERE size > 11")
    export = _export(node, ledger.tmp / "e.jsonl")
    assert _verify(ledger, export, ledger.early)[0] == 0  # only history up to 5 was witnessed
    code, out = _verify(ledger, export, ledger.older)
    assert (code, out.strip()) == (
        1,
        "FAIL index 11: truncated — the export's checkpoint has size 11, but the log signed "
        "size 14 before: entries 11..13 were cut off",
    )


def _fork_from(node: Any, start: int) -> None:
    """Rewrite entries [start, size) with a fresh, valid chain and sign it with the ledger key."""
    leaves = _leaves(node)
    prev = merkle.leaf_hash(leaves[start - 1])
    for i in range(start, len(leaves)):
        leaves[i] = _edited(leaves[i], actor="rewritten", prev=prev.hex())
        prev = merkle.leaf_hash(leaves[i])
        _sql(
            node,
            "UPDATE ledger_entries SET leaf = :l, leaf_hash = :h WHERE idx = :i",
            l=leaves[i],
            h=prev,
            i=i,
        )
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(leaves[i]) for i in range(len(leaves))])
    note = sign_checkpoint(Checkpoint(origin_of(node), len(leaves), root), ledger_signer(node))
    _sql(node, "DELETE FROM ledger_checkpoints WHERE size >= :s", s=start)
    _sql(
        node,
        "INSERT INTO ledger_checkpoints (size, root, note, time_ms) VALUES (:s, :r, :n, 0)",
        s=len(leaves),
        r=root,
        n=note,
    )


def test_forked_history(node, ledger) -> None:  # type: ignore[no-untyped-def]
    """A key holder rewrites history from 9 on: the export is valid and signed, but its first
    14 entries no longer hash to the checkpoint the auditor kept. One root cannot say which
    entry changed; a second kept checkpoint narrows it to [5, 14)."""
    _fork_from(node, 9)
    export = _export(node, ledger.tmp / "e.jsonl")
    assert _verify(ledger, export)[0] == 0  # on its own, a fork is a valid log
    assert _verify(ledger, export, ledger.early)[0] == 0  # forked after what this auditor saw
    code, out = _verify(ledger, export, ledger.older)
    assert code == 1
    assert out.startswith(
        "FAIL index 0: forked — the export is signed, but its first 14 entries miss the root"
    )
    assert "history was rewritten in [0, 14); no earlier checkpoint kept" in out
    code, out = _verify(ledger, export, ledger.early, ledger.older)
    assert out.startswith("FAIL index 5: forked") and "[5, 14)" in out, out


def test_usage_errors_exit_2(node, ledger) -> None:  # type: ignore[no-untyped-def]
    export = str(_export(node, ledger.tmp / "e.jsonl"))
    run = CliRunner().invoke
    assert run(app, ["audit", "verify", export, "--vkey", "not-a-key"]).exit_code == 2
    assert run(app, ["audit", "verify", export + ".nope", "--vkey", ledger.vkey]).exit_code == 2
    assert run(app, ["audit", "verify", export]).exit_code == 2
    other = Signer("elsewhere.test/ledger", Ed25519PrivateKey.generate()).vkey()
    result = run(app, ["audit", "verify", export, "--vkey", other])
    assert (result.exit_code, result.stdout.split(" —")[0]) == (1, "FAIL checkpoint: bad-signature")


# -- unit: malformed and hand-crafted exports (no database) ----------------------------------

ORIGIN = "unit.test/ledger"
SIGNER = Signer(ORIGIN, Ed25519PrivateKey.generate())
SUBJECTS = [pseudonym(b"s" * 32, f"subject-{i}") for i in range(3)]
DEEP: Any = 1
for _ in range(140):
    DEEP = [DEEP]


def _chain(n: int, tweak: dict[int, dict[str, Any]] | None = None) -> list[bytes]:
    """n valid leaves; ``tweak`` overrides fields of some (the chain is kept valid around them)."""
    leaves, prev, last = [], bytes(32), {}
    for i in range(n):
        s = SUBJECTS[i % 3]
        leaf = encode_leaf(
            Event(kind="pull", actor="bank", outcome="granted", subject=s),
            index=i,
            time_ms=i,
            node="31",
            prev=prev,
            prev_subject=last.get(s),
        )
        if tweak and i in tweak:
            leaf = orjson.dumps({**orjson.loads(leaf), **tweak[i]}, option=orjson.OPT_SORT_KEYS)
        leaves.append(leaf)
        last[s], prev = i, merkle.leaf_hash(leaf)
    return leaves


def _lines(leaves: list[bytes], signed: list[bytes] | None = None) -> list[str]:
    """An export of ``leaves`` whose checkpoint signs ``signed`` (default: the same leaves)."""
    signed = leaves if signed is None else signed
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in signed])
    note = sign_checkpoint(Checkpoint(ORIGIN, len(signed), root), SIGNER)
    return [
        header_line(ORIGIN, "31", len(signed)),
        *(entry_line(i, x) for i, x in enumerate(leaves)),
        checkpoint_line(note),
    ]


def _audit(lines: list[str]) -> AuditFailed | None:
    try:
        audit_export(lines, verifier=SIGNER.verifier)
    except AuditFailed as e:
        return e
    return None


def test_unit_clean_export_and_progress() -> None:
    calls: list[tuple[int, int]] = []
    report = audit_export(
        _lines(_chain(7)), verifier=SIGNER.verifier, progress=lambda d, t: calls.append((d, t))
    )
    assert report.checkpoint.size == 7 and report.subjects == 3
    assert calls[0] == (0, 7) and calls[-1] == (7, 7)
    empty = audit_export(_lines([]), verifier=SIGNER.verifier)
    assert empty.checkpoint.size == 0


@pytest.mark.parametrize(
    ("mutate", "index", "needle"),
    [
        (lambda ls: [], None, "the export is empty"),
        (lambda ls: ["not json\n", *ls[1:]], None, "the header line is not JSON"),
        (lambda ls: ['{"format": "other/1"}\n', *ls[1:]], None, "does not declare format"),
        (lambda ls: [ls[0].replace('"size":4', '"size":-1'), *ls[1:]], None, "size >= 0"),
        (
            lambda ls: [ls[0].replace('"size":4', '"size":5'), *ls[1:]],
            None,
            "the header says size 5",
        ),
        (lambda ls: [*ls[:2], "{oops\n", *ls[3:]], 1, "entry line 1: the line is not JSON"),
        (lambda ls: [*ls[:2], "[1, 2]\n", *ls[3:]], 1, "is not a JSON object"),
        (lambda ls: [*ls[:2], '{"leaf": "AAAA"}\n', *ls[3:]], 1, "needs exactly index and leaf"),
        (lambda ls: [*ls[:2], ls[2].replace('"index":1', '"index":"1"'), *ls[3:]], 1, "wrong type"),
        (
            lambda ls: [*ls[:2], ls[2].replace('"leaf":"', '"leaf":"*'), *ls[3:]],
            1,
            "leaf is not base64",
        ),
        (
            lambda ls: [*ls[:2], ls[2].replace('"leaf":"', '"leaf":"\\n'), *ls[3:]],
            1,
            "leaf is not base64",
        ),
        (lambda ls: ls[:-1], 4, "ends without a checkpoint line"),
        (lambda ls: [*ls, '{"more": 1}\n'], None, "goes on after the checkpoint line"),
        (lambda ls: [*ls[:-1], '{"checkpoint": 7}\n'], 4, "needs exactly a checkpoint note"),
    ],
)
def test_unit_malformed_exports(mutate, index, needle) -> None:  # type: ignore[no-untyped-def]
    e = _audit(mutate(_lines(_chain(4))))
    assert e is not None and e.problem == "malformed", e and e.describe()
    assert (e.index, needle in e.detail) == (index, True), e.describe()
    assert e.describe().startswith("export:" if index is None else f"index {index}:")


def test_unit_entries_beyond_the_checkpoint() -> None:
    five, four = _lines(_chain(5)), _lines(_chain(4))
    e = _audit([four[0], *five[1:-1], four[-1]])
    assert e is not None and (e.problem, e.index) == ("malformed", 4), e and e.describe()
    assert "entries beyond the checkpoint" in e.detail


def test_unit_trailing_blank_lines_are_fine() -> None:
    assert _audit([*_lines(_chain(3)), "\n", "  \n"]) is None


@pytest.mark.parametrize(
    ("tweak", "needle"),
    [
        ({"v": True}, "v or time_ms is not an integer"),
        ({"v": 1.0}, "v or time_ms is not an integer"),
        ({"time_ms": True}, "v or time_ms is not an integer"),
        ({"time_ms": 1.5}, "ill-typed"),
        ({"index": True}, "ill-typed"),
        ({"prev_subject": True}, "ill-typed"),
        ({"subject": "Not-A-Pseudonym"}, "not a pseudonym"),
        ({"extra": 1}, "exactly the ledger fields"),
        ({"item": [[1]]}, None),  # nested and canonical: not what the node writes, still a leaf
        ({"item": DEEP}, "nested too deeply"),  # canonical_json's depth limit, not orjson's
    ],
)
def test_unit_leaves_the_fast_path_must_not_accept(tweak, needle) -> None:  # type: ignore[no-untyped-def]
    """Leaves the streaming fast path hands to the careful path (decode_leaf) to judge."""
    e = _audit(_lines(_chain(4, {1: tweak})))
    if needle is None:
        assert e is None
    else:
        assert e is not None and (e.problem, e.index) == ("edited", 1), e and e.describe()
        assert needle in e.detail, e.detail


def test_unit_brackets_inside_strings_take_the_slow_path_and_pass() -> None:
    assert _audit(_lines(_chain(5, {2: {"reason": "[备注] {x}"}}))) is None


def test_unit_duplicate_entry_and_genesis() -> None:
    leaves = _chain(5)
    e = _audit(_lines([*leaves[:3], leaves[1], leaves[4]]))
    assert e is not None and (e.problem, e.index) == ("edited", 3)
    assert "another leaf that says it is 1" in e.detail
    e = _audit(_lines([_chain(1, {0: {"prev": "ab" * 32}})[0]]))
    assert e is not None and (e.problem, e.index) == ("edited", 0) and "genesis" in e.detail


@hypothesis_settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 40), data=st.data())
def test_unit_any_single_change_is_found_where_it_was_made(n, data) -> None:  # type: ignore[no-untyped-def]
    signed = _chain(n)
    kind = data.draw(st.sampled_from(["edit", "delete", "swap"]))
    k = data.draw(st.integers(0, n - (2 if kind == "swap" else 1)))
    leaves = list(signed)
    if kind == "edit":
        leaves[k] = orjson.dumps(
            {**orjson.loads(leaves[k]), "actor": "x"}, option=orjson.OPT_SORT_KEYS
        )
    elif kind == "delete":
        del leaves[k]
    else:
        leaves[k], leaves[k + 1] = leaves[k + 1], leaves[k]
    e = _audit(_lines(leaves, signed))
    expected = {"edit": "edited", "delete": "missing", "swap": "reordered"}[kind]
    assert e is not None and (e.problem, e.index) == (expected, k), e and e.describe()


def test_unit_older_checkpoint_from_another_key() -> None:
    other = Signer(ORIGIN, Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, merkle.EMPTY_ROOT), other)
    with pytest.raises(AuditFailed) as e:
        audit_export(_lines(_chain(2)), verifier=SIGNER.verifier, older_checkpoint=note)
    assert (e.value.problem, e.value.index) == ("bad-signature", None)
    assert "the older checkpoint does not verify" in e.value.detail
