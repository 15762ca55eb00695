"""Status-list allocation and publication (IETF Token Status List, 2 bits per entry).

Indices are drawn at random from a large list (herd privacy) and never reused; a list that
random draws keep finding taken is closed and the next one opened.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from exchange.clock import Clock
from exchange.crypto.jws import SigningKey, sign_jwt
from exchange.errors import NotFound
from exchange.persistence.insert import claim_row
from exchange.persistence.models import StatusEntry, StatusListRecord
from exchange.status.codec import StatusList, status_list_claims

LIST_SIZE = 1 << 17  # 131,072 entries: 32 KiB at 2 bits before compression
BITS = 2
VALID, REVOKED, SUSPENDED = 0, 1, 2
FULL_AFTER_COLLISIONS = 5
STATUS_CODES = {"valid": VALID, "revoked": REVOKED, "suspended": SUSPENDED}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}


def list_uri(base_url: str, list_id: int) -> str:
    return f"{base_url}/v1/status-lists/{list_id}"


_NEWEST_LIST = (
    select(StatusListRecord.id, StatusListRecord.size)
    .where(StatusListRecord.purpose == bindparam("purpose"))
    .order_by(StatusListRecord.id.desc())
    .limit(1)
)


def _newest_list(session: Session, purpose: str) -> tuple[int, int] | None:
    """(id, size) of the newest list for ``purpose``: one prepared read, no ORM instance."""
    row = session.connection().execute(_NEWEST_LIST, {"purpose": purpose}).first()
    return (int(row[0]), int(row[1])) if row else None


def _new_list(session: Session, purpose: str, clock: Clock) -> StatusListRecord:
    rec = StatusListRecord(
        purpose=purpose, size=LIST_SIZE, bits=BITS,
        created_at=datetime.fromtimestamp(clock.now(), UTC),
    )
    session.add(rec)
    session.flush()
    return rec


def allocate(
    session: Session, purpose: str, clock: Clock, rng: secrets.SystemRandom
) -> tuple[int, int]:
    """A fresh (list id, random index) for ``purpose``; the entry starts VALID.

    No counter is kept: a shared counter row would serialise every issuance on its lock.
    A list counts as full when ``FULL_AFTER_COLLISIONS`` random draws in a row hit taken
    indices (around 75 % filled), and the next list is opened.
    """
    newest = _newest_list(session, purpose)
    if newest is None:
        rec = _new_list(session, purpose, clock)
        newest = rec.id, rec.size
    list_id, size = newest
    collisions = 0
    for _ in range(64):
        idx = rng.randrange(size)
        if claim_row(session, StatusEntry, {"list_id": list_id, "idx": idx, "status": VALID}):
            return list_id, idx
        collisions += 1  # taken (here or by a concurrent process): draw again
        if collisions >= FULL_AFTER_COLLISIONS:
            rec = _new_list(session, purpose, clock)
            list_id, size, collisions = rec.id, rec.size, 0
    raise RuntimeError("could not draw a free status index in 64 tries")  # pragma: no cover


def set_status(session: Session, list_id: int, idx: int, value: int) -> None:
    """Record the new status of an allocated entry (visible in the very next list fetch)."""
    entry = session.get(StatusEntry, (list_id, idx), with_for_update=True)
    if entry is None:
        raise NotFound(f"status entry {list_id}/{idx} does not exist")
    entry.status = value


def status_of(session: Session, list_id: int, idx: int) -> int:
    value = statuses_of(session, [(list_id, idx)])[0]
    if isinstance(value, NotFound):
        raise value
    return value


_PG_STATUSES = (
    "SELECT e.list_id, e.idx, e.status FROM status_entries e "
    "JOIN unnest(%(lists)s::int[], %(idxs)s::int[]) AS k(l, i) "
    "ON e.list_id = k.l AND e.idx = k.i"
)
_CHUNK = 400  # entries per statement: 800 parameters, under any SQLite's limit
_SQLITE_STATUSES = "SELECT list_id, idx, status FROM status_entries WHERE (list_id, idx) IN "


def statuses_of(session: Session, entries: Sequence[tuple[int, int]]) -> list[int | NotFound]:
    """The status of each (list id, index), in one statement (per 400 entries); NotFound in
    place of an entry that does not exist. Driver-level SQL on the session's connection (no
    statement compilation: this is the verify route's read); PostgreSQL prepares it after a
    few uses."""
    wanted = sorted(set(entries))
    if not wanted:
        return []
    conn = session.connection()
    found: dict[tuple[int, int], int] = {}
    for at in range(0, len(wanted), _CHUNK):
        part = wanted[at : at + _CHUNK]
        if conn.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(
                _PG_STATUSES, {"lists": [w[0] for w in part], "idxs": [w[1] for w in part]}
            )
        else:  # SQLite: a row-value IN over the primary key
            values = ",".join(["(?,?)"] * len(part))
            rows = conn.exec_driver_sql(
                f"{_SQLITE_STATUSES}(VALUES {values})", tuple(int(x) for w in part for x in w)
            )
        found.update(((a, b), int(v)) for a, b, v in rows)
    return [
        found[e] if e in found else NotFound(f"status entry {e[0]}/{e[1]} does not exist")
        for e in entries
    ]


def list_token(
    session: Session,
    *,
    list_id: int,
    base_url: str,
    key: SigningKey,
    now: float,
    ttl: int,
) -> str:
    """The signed ``statuslist+jwt`` for list ``list_id``, built from the current entries."""
    rec = session.get(StatusListRecord, list_id)
    if rec is None:
        raise NotFound(f"status list {list_id} does not exist")
    lst = StatusList(rec.size, rec.bits)
    for idx, value in session.execute(
        select(StatusEntry.idx, StatusEntry.status).where(
            StatusEntry.list_id == list_id, StatusEntry.status != VALID
        )
    ):
        lst.set(idx, value)
    iat = int(now)
    claims = status_list_claims(
        uri=list_uri(base_url, list_id), lst=lst, iat=iat, exp=iat + max(3600, 10 * ttl), ttl=ttl
    )
    return sign_jwt(claims, key, typ="statuslist+jwt")
