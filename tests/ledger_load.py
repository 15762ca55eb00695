"""Ledger load worker and the independent ledger audit the concurrency and crash tests share.

Run as a separate OS process (``python -m tests.ledger_load --database-url URL --home DIR``):
it opens a real :class:`Node` over the shared database, starts the node's ledger writer, and
from several threads records events through ``log_event`` + ``commit_wait`` exactly as a
request handler does. It writes one flushed line per fact to stdout, so a parent that kills
it with SIGKILL still knows everything that was answered before the kill:

``ready``                    the writer is running (then waits for ``--go-file`` if given)
``ok <sha> <i> <c> <w>``     ``commit_wait`` returned index ``i`` for event ``sha``; its
                             commit took ``c`` seconds and the wait ``w``
``committed <sha>``          a lingering event is committed to the outbox, not yet waited on
``error <what>``             a caller failed; the process exits 1 after the others finish
``done``                     every thread finished

:func:`audit` re-derives everything from the stored leaf bytes (chain, indices, subject
back-pointers, every checkpoint's root) and checks every signed checkpoint note with the
ledger verifier key; :func:`assert_included` proves answered indices into the final one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from exchange.ledger import merkle, proofs, store
from exchange.ledger.checkpoint import Checkpoint, open_checkpoint
from exchange.ledger.leaf import GENESIS_PREV, Event, decode_leaf
from exchange.ledger.note import Verifier
from exchange.persistence.db import make_engine
from exchange.persistence.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerOutbox
from exchange.settings import Settings
from tests.conftest import BASE_URL, TEST_PASSPHRASE, TEST_SUBJECT_KEY

if TYPE_CHECKING:
    from exchange.node import Node

REPO = Path(__file__).resolve().parent.parent
SUBJECTS = 5  # events cycle through a few shared subjects, so prev_subject crosses processes


def settings_for(database_url: str, home: Path) -> Settings:
    """The ``settings`` fixture's node identity, for any process over ``database_url``."""
    return Settings(
        home=home,
        database_url=database_url,
        node="31",
        base_url=BASE_URL,
        key_passphrase=TEST_PASSPHRASE,
        subject_key=TEST_SUBJECT_KEY,
        dev=False,
    )


def prepare(settings: Settings) -> str:
    """Create the node keys once (before any worker starts); the ledger verifier key."""
    from exchange.bootstrap import ensure_node_keys
    from exchange.ledger.service import verifier_key
    from exchange.node import Node

    node = Node.open(settings, pool_size=1)
    try:
        with node.sessions.begin() as session:
            ensure_node_keys(session, node)
        return verifier_key(node)
    finally:
        node.close()


def request_sha(tag: str, thread: int, i: int) -> str:
    return hashlib.sha256(f"{tag}/{thread}/{i}".encode()).hexdigest()


def direct_events(node: Node, tag: str, n: int) -> list[tuple[str, Event]]:
    """``n`` direct events (ref, event) over three subjects, with unique refs, for a
    :class:`BatchAppender` driven by hand."""
    from exchange.ledger.service import subject_pseudonym

    return [
        (
            f"{tag}-{i:028d}",
            Event(
                kind="pull",
                actor="batch-reads",
                outcome="granted",
                subject=subject_pseudonym(node, f"batch-reads-{i % 3}"),
                request_sha256=request_sha(tag, 0, i),
            ),
        )
        for i in range(n)
    ]


# -- the worker ------------------------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    from exchange.ledger.service import commit_wait, log_event, subject_pseudonym
    from exchange.node import Node

    out_lock = threading.Lock()
    failures: list[str] = []

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    node = Node.open(settings_for(args.database_url, Path(args.home)), pool_size=args.threads + 3)
    node.start_ledger()
    emit("ready")
    if args.go_file:
        go = Path(args.go_file)
        while not go.exists():
            time.sleep(0.01)

    def one(thread: int, i: int, before_wait: Callable[[str], None] | None = None) -> None:
        sha = request_sha(args.tag, thread, i)
        subject = subject_pseudonym(node, f"load-subject-{(thread + i) % SUBJECTS}")
        event = Event(
            kind="pull", actor="load", outcome="granted", subject=subject, request_sha256=sha
        )
        started = time.monotonic()
        with node.sessions.begin() as session:
            log_event(session, node, event)
        committed = time.monotonic()
        if before_wait is not None:
            before_wait(sha)
        [index] = commit_wait(node, session)
        emit(f"ok {sha} {index} {committed - started:.3f} {time.monotonic() - committed:.3f}")

    def appender(thread: int) -> None:
        try:
            for i in range(args.count):
                one(thread, i)
        except Exception as e:
            failures.append(repr(e))
            emit(f"error {e!r}")

    def linger(thread: int) -> None:
        # Commits its event, then stalls before waiting: if the process dies meanwhile and
        # no batch ran since, the row is left in the outbox for another writer to append.
        def stall(sha: str) -> None:
            emit(f"committed {sha}")
            time.sleep(args.linger_seconds)

        try:
            one(thread, 0, stall)
        except Exception as e:
            failures.append(repr(e))
            emit(f"error {e!r}")

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(args.threads)]
    threads += [
        threading.Thread(target=linger, args=(args.threads + t,)) for t in range(args.linger)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    node.close()
    if failures:
        return 1
    emit("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--home", required=True, help="CERTEX_HOME holding the node keys")
    p.add_argument("--tag", required=True, help="makes this worker's request_sha256 unique")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--count", type=int, default=100, help="appends per thread")
    p.add_argument("--linger", type=int, default=0, help="extra threads that stall before wait")
    p.add_argument("--linger-seconds", type=float, default=0.0)
    p.add_argument("--go-file", help="wait for this file to exist before appending")
    return _worker(p.parse_args(argv))


@dataclass
class Worker:
    """A running ``tests.ledger_load`` process whose stdout goes to a file."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def lines(self) -> list[str]:
        """Complete lines written so far (a line cut by SIGKILL is not an answer)."""
        text = self.out.read_text()
        return text.split("\n")[:-1]

    def waits(self) -> list[float]:
        """How long each answered ``commit_wait`` took, in seconds."""
        return [float(line.split()[4]) for line in self.lines() if line.startswith("ok ")]

    def answered(self) -> dict[str, int]:
        return {
            parts[1]: int(parts[2])
            for parts in (line.split() for line in self.lines())
            if parts[0] == "ok"
        }

    def committed(self) -> set[str]:
        return {line.split()[1] for line in self.lines() if line.startswith("committed ")}

    def wait_for(self, what: Callable[[Worker], bool], timeout: float, why: str) -> None:
        deadline = time.monotonic() + timeout
        while not what(self):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}) before {why}\n{self.diagnostics()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"worker: no {why} after {timeout} s\n{self.diagnostics()}")
            time.sleep(0.02)

    def finish(self, timeout: float) -> dict[str, int]:
        """Wait for a clean exit; every answered index."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"worker did not finish in {timeout} s\n{self.diagnostics()}"
            ) from None
        lines = self.lines()
        assert rc == 0 and lines[-1:] == ["done"], f"worker failed ({rc})\n{self.diagnostics()}"
        return self.answered()

    def diagnostics(self) -> str:
        errors = [line for line in self.lines() if line.startswith("error")][:5]
        return "\n".join([*errors, self.err.read_text()[-3000:]])


def spawn(
    settings: Settings, logdir: Path, tag: str, *extra: str, threads: int = 4, count: int = 100
) -> Worker:
    logdir.mkdir(parents=True, exist_ok=True)
    out, err = logdir / f"{tag}.out", logdir / f"{tag}.err"
    cmd = [
        sys.executable,
        "-m",
        "tests.ledger_load",
        f"--database-url={settings.effective_database_url}",
        f"--home={settings.home}",
        f"--tag={tag}",
        f"--threads={threads}",
        f"--count={count}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env
        )
    return Worker(proc, out, err)


# -- the audit -------------------------------------------------------------------------------


@dataclass
class AuditedLedger:
    """A ledger that passed :func:`audit`."""

    size: int
    leaves: list[bytes]
    by_request: dict[str, int]  # request_sha256 -> index
    checkpoint: Checkpoint  # the latest, opened with the verifier key
    checkpoints: int  # signed checkpoints, the genesis (size 0) included
    outbox: int  # rows still waiting to be appended


def audit(database_url: str, vkey: str) -> AuditedLedger:
    """Check the whole stored ledger from its leaf bytes; AssertionError names what is wrong.

    1. Indices are 0..n-1 with no gap or duplicate; each leaf is canonical and names its index.
    2. The chain: leaf i's ``prev`` is the hash of leaf i-1 (zeros for leaf 0), and the stored
       ``leaf_hash`` is the hash of the stored bytes.
    3. ``prev_subject`` points at the same subject's previous entry.
    4. The head row says n and the last leaf hash.
    5. Every checkpoint note verifies with ``vkey``, and its root is the root recomputed from
       the leaves at its size; each is consistent with the next by a stored-hash proof.
    6. The latest checkpoint covers n.
    """
    verifier = Verifier.from_vkey(vkey)
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            entries = list(store.iter_entries(conn))
            stored_hash = dict(conn.execute(select(LedgerEntry.idx, LedgerEntry.leaf_hash)).all())
            head_size, head_hash = conn.execute(
                select(LedgerHead.size, LedgerHead.last_hash).where(LedgerHead.id == 1)
            ).one()
            cps = conn.execute(
                select(
                    LedgerCheckpoint.size, LedgerCheckpoint.root, LedgerCheckpoint.note
                ).order_by(LedgerCheckpoint.size)
            ).all()
            outbox = conn.execute(select(func.count()).select_from(LedgerOutbox)).scalar_one()
            n = len(entries)
            # 1.
            indices = [e.index for e in entries]
            assert indices == list(range(n)), f"indices are not 0..{n - 1}: {_gaps(indices)}"
            prev = bytes.fromhex(GENESIS_PREV)
            last_of: dict[str, int] = {}
            by_request: dict[str, int] = {}
            checkpoint_sizes = {int(size) for size, _, _ in cps}
            roots: dict[int, bytes] = {}
            builder = merkle.RootBuilder()
            if 0 in checkpoint_sizes:
                roots[0] = builder.root()
            for e in entries:
                leaf = decode_leaf(e.leaf)
                assert leaf.index == e.index, f"entry {e.index} holds leaf index {leaf.index}"
                # 2.
                h = merkle.leaf_hash(e.leaf)
                assert leaf.prev == prev, f"entry {e.index}: prev is not the previous leaf hash"
                assert bytes(stored_hash[e.index]) == h, f"entry {e.index}: stored hash differs"
                # 3.
                if leaf.subject is not None:
                    assert leaf.prev_subject == last_of.get(leaf.subject), (
                        f"entry {e.index}: prev_subject {leaf.prev_subject} should be "
                        f"{last_of.get(leaf.subject)}"
                    )
                    last_of[leaf.subject] = e.index
                sha = leaf.fields["request_sha256"]
                if sha is not None:
                    assert sha not in by_request, f"request {sha} logged twice"
                    by_request[sha] = e.index
                prev = h
                builder.append(h)
                if builder.size in checkpoint_sizes:
                    roots[builder.size] = builder.root()
            # 4.
            assert (int(head_size), bytes(head_hash)) == (n, prev if n else bytes(32)), (
                f"head says {head_size}, storage has {n} entries"
            )
            # 5.
            opened: list[Checkpoint] = []
            for size, root, note in cps:
                cp = open_checkpoint(note, verifier)
                assert cp.size == size and cp.root == bytes(root), f"checkpoint {size} row != note"
                assert size in roots, f"checkpoint {size} is beyond the stored leaves ({n})"
                assert cp.root == roots[size], f"checkpoint {size} root is not the leaves' root"
                if opened and opened[-1].size > 0:
                    old = opened[-1]
                    proof = proofs.consistency(conn, old.size, cp.size)
                    merkle.verify_consistency(old.size, cp.size, old.root, cp.root, proof)
                opened.append(cp)
            # 6.
            assert opened, "no signed checkpoint"
            assert opened[-1].size == n, f"latest checkpoint covers {opened[-1].size}, not {n}"
    finally:
        engine.dispose()
    return AuditedLedger(
        size=n,
        leaves=[e.leaf for e in entries],
        by_request=by_request,
        checkpoint=opened[-1],
        checkpoints=len(opened),
        outbox=int(outbox),
    )


def assert_included(database_url: str, ledger: AuditedLedger, answered: Mapping[str, int]) -> None:
    """Each caller's event is at the index it was told, proven into the latest checkpoint."""
    cp = ledger.checkpoint
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            for sha, index in answered.items():
                assert ledger.by_request.get(sha) == index, (
                    f"caller was told {index} for {sha}, ledger has {ledger.by_request.get(sha)}"
                )
                proof = proofs.inclusion(conn, index, cp.size)
                leaf_hash = merkle.leaf_hash(ledger.leaves[index])
                merkle.verify_inclusion(leaf_hash, index, cp.size, proof, cp.root)
    finally:
        engine.dispose()


def _gaps(indices: list[int]) -> str:
    counts = Counter(indices)
    dups = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(set(range(max(indices, default=-1) + 1)) - set(counts))
    return f"missing {missing[:10]}, duplicated {dups[:10]}"


if __name__ == "__main__":
    sys.exit(main())
