"""Quick and full settings. Quick fits in 3 minutes on a 2-core machine; full is the
release run (1,000,000-entry ledger, longer windows)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    warmup: float  # seconds of load before the measured window
    duration: float  # seconds in the measured window
    connections: int  # concurrent keep-alive connections of the load generator
    gen_procs: int  # load generator processes (connections are split among them)
    workers: int  # uvicorn worker processes, the node and the bare app alike
    subjects: int  # enterprises with a licence and a consent (1000 uses each)
    ledger_entries: int  # synthetic ledger entries bulk-loaded under the PostgreSQL node
    inclusion_samples: int
    append_threads: int
    append_seconds: float
    calibrate_seconds: float
    sqlite_extra: bool  # issue and verify on SQLite too, not only pull


QUICK = Mode(name="quick", warmup=1.0, duration=4.0, connections=64, gen_procs=1, workers=1,
             subjects=64, ledger_entries=100_000, inclusion_samples=2000, append_threads=48,
             append_seconds=4.0, calibrate_seconds=2.0, sqlite_extra=True)
FULL = Mode(name="full", warmup=3.0, duration=20.0, connections=64, gen_procs=1, workers=1,
            subjects=256, ledger_entries=1_000_000, inclusion_samples=10_000, append_threads=48,
            append_seconds=15.0, calibrate_seconds=5.0, sqlite_extra=True)

# Targets (DESIGN: ratios against the bare FastAPI endpoint measured in the same run).
TARGETS = {
    "pull-pg": 0.30,
    "pull-sqlite": 0.35,
    "issue": 0.25,
    "verify": 0.35,
    "inclusion-http": 0.5,
    "appends": 0.6,
    "audit": 1.5,  # at most, × bare hashlib
    "inclusion-p99-ms": 2.0,
    "pull-p99-ms": 100.0,
    "rss-mb": 200.0,
    "generator-headroom": 2.0,
}
APPEND_CALLERS = 256  # concurrent callers of the direct ledger-append figure
# The same figure again with this many callers, as a sensitivity (no target): how the rate
# grows with the batches more callers make.
APPEND_CALLERS_MANY = 2048
