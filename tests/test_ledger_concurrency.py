"""Concurrent appends make one linear ledger (DESIGN.md §2.5, §7).

Eight real OS processes, each with its own group-commit writer, append over one database;
threads inside one process share the writer's batches. Afterwards the whole ledger is
re-derived from its leaf bytes (tests/ledger_load.py ``audit``) and every caller's answered
index is proven into the final signed checkpoint.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from exchange.ledger import writer
from exchange.ledger.leaf import Event
from exchange.ledger.service import commit_wait, log_event, subject_pseudonym
from exchange.ledger.writer import LedgerWriter, pending_refs
from exchange.node import Node
from tests import ledger_load as load

PROCESSES = 8
APPENDS_PER_PROCESS = 500
THREADS_PER_PROCESS = 4


@pytest.mark.slow  # about 30 s on two cores: 4000 appends, then every proof checked
def test_processes_append_one_linear_chain(database_url: str, tmp_path: Path) -> None:
    settings = load.settings_for(database_url, tmp_path / "home")
    vkey = load.prepare(settings)  # node keys once, before any worker reads them
    go = tmp_path / "go"
    workers = [
        load.spawn(
            settings,
            tmp_path / "logs",
            f"p{p}",
            f"--go-file={go}",
            threads=THREADS_PER_PROCESS,
            count=APPENDS_PER_PROCESS // THREADS_PER_PROCESS,
        )
        for p in range(PROCESSES)
    ]
    for w in workers:  # every writer is up (and has raced for the genesis checkpoint)
        w.wait_for(lambda w: "ready" in w.lines(), 60, "ready")
    go.touch()
    answered: dict[str, int] = {}
    waits: list[float] = []
    for w in workers:
        told = w.finish(timeout=120)
        assert len(told) == APPENDS_PER_PROCESS
        answered.update(told)
        waits += w.waits()

    total = PROCESSES * APPENDS_PER_PROCESS
    ledger = load.audit(database_url, vkey)
    assert ledger.size == total and ledger.checkpoint.size == total
    assert ledger.outbox == 0
    assert sorted(answered.values()) == list(range(total))  # every index told exactly once
    load.assert_included(database_url, ledger, answered)
    # Regression: on SQLite a writer could wait seconds for the database lock (up to 13 s of
    # the 15 s wait timeout) although another process's writer had appended its events.
    assert max(waits) < 5, f"slowest commit_wait took {max(waits):.1f} s"


def test_threads_in_one_process_share_batches(database_url: str, tmp_path: Path) -> None:
    threads, per_thread = 16, 40
    settings = load.settings_for(database_url, tmp_path / "home")
    vkey = load.prepare(settings)
    node = Node.open(settings, pool_size=threads + 2)
    node.start_ledger()

    def append(t: int) -> dict[str, int]:
        told: dict[str, int] = {}
        for i in range(per_thread):
            sha = load.request_sha("in-process", t, i)
            event = Event(
                kind="pull",
                actor="load",
                outcome="granted",
                subject=subject_pseudonym(node, f"subject-{i % 3}"),
                request_sha256=sha,
            )
            with node.sessions.begin() as session:
                log_event(session, node, event)
            [told[sha]] = commit_wait(node, session)
        return told

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(append, range(threads)))
    finally:
        node.close()
    elapsed = time.monotonic() - started
    answered = {sha: i for told in results for sha, i in told.items()}

    total = threads * per_thread
    ledger = load.audit(database_url, vkey)
    assert ledger.size == total and sorted(answered.values()) == list(range(total))
    load.assert_included(database_url, ledger, answered)
    # Group commit: one signed checkpoint per batch (plus the genesis), so fewer
    # checkpoints than entries means batches held more than one entry on average.
    batches = ledger.checkpoints - 1
    assert batches < total, f"{batches} batches for {total} entries: no group commit"
    print(f"{total} entries in {batches} batches ({total / batches:.1f}/batch), {elapsed:.1f} s")


def test_regression_waiter_appended_by_another_writer_is_not_starved(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer answers a caller whose event another process's writer appended.

    It used to look such events up only after its append loop ended, and that loop ran until
    it found the outbox empty: under a steady stream of other processes' commits it never
    did, and the caller got LedgerUnavailable (503) for a committed entry.
    """
    monkeypatch.setattr(writer, "RECHECK_AFTER", 60.0)  # only the writer thread answers
    mine = LedgerWriter(node, wait_timeout=3.0)
    mine.start()
    with node.sessions.begin() as session:
        log_event(session, node, _event(0))
    [ref] = pending_refs(session)
    other = LedgerWriter(node)  # a second writer over the database, as in another process
    other.start()  # appends every committed outbox row, ours included
    stop, fed = threading.Event(), [0]

    def feed() -> None:  # other processes' callers keep committing events
        while not stop.is_set():
            fed[0] += 1
            with node.sessions.begin() as s:
                log_event(s, node, _event(fed[0]))

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        while fed[0] < 20:
            time.sleep(0.01)
        started = time.monotonic()
        assert mine.wait([ref]) == [0]
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        feeder.join()
        other.stop()
        mine.stop()


def _event(n: int) -> Event:
    return Event(kind="pull", actor="load", outcome="granted", request_sha256=f"{n:064x}")
