"""SQLAlchemy 2 typed models. Every change here needs an alembic migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the node schema."""


class Agency(Base):
    """An issuing agency (发证机关). Its client id is its USCC."""

    __tablename__ = "agencies"

    uscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    types: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Client(Base):
    """An OAuth client: agency, bank or auditor, authenticated by private_key_jwt."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    jwks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    items: Mapped[list[str]] = mapped_column(JSON)
    agency_uscc: Mapped[str | None] = mapped_column(ForeignKey("agencies.uscc"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsedAssertion(Base):
    """A client-assertion ``jti`` already accepted: never accepted twice (RFC 7523 §3)."""

    __tablename__ = "used_assertions"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class KeyRecord(Base):
    """Public half and lifecycle of a signing key; the private half lives in ``keys/<kid>.pem``."""

    __tablename__ = "keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StatusListRecord(Base):
    """One Token Status List: a fixed number of 2-bit entries handed out at random."""

    __tablename__ = "status_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    purpose: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    bits: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StatusEntry(Base):
    """An allocated status-list index and its status (0 valid, 1 revoked, 2 suspended)."""

    __tablename__ = "status_entries"

    list_id: Mapped[int] = mapped_column(ForeignKey("status_lists.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[int] = mapped_column(SmallInteger, default=0)


class Certificate(Base):
    """An issued electronic certificate (电子证照) and its lifecycle state."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("status_list", "status_idx"),
        Index("ix_certificates_subject", "subject_id", "type"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    issuer_uscc: Mapped[str] = mapped_column(ForeignKey("agencies.uscc"))
    subject_id: Mapped[str] = mapped_column(String(18))
    subject_kind: Mapped[str] = mapped_column(String(16))
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    credential: Mapped[str] = mapped_column(Text)
    kid: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_until: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    status_list: Mapped[int] = mapped_column(ForeignKey("status_lists.id"))
    status_idx: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class LedgerEntry(Base):
    """One ledger leaf: the exact canonical bytes that were hashed, and columns to query by."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        # On PostgreSQL the primary key's index also holds the leaf hashes, so that a
        # proof's read is an index-only scan, not a random heap page (migration 0005).
        PrimaryKeyConstraint("idx", name="ledger_entries_pkey", postgresql_include=["leaf_hash"]),
        # A subject's entries are found by the first 64 bits of its pseudonym (then compared
        # in full): an 8-byte key is cheaper to insert into than the 64-character subject
        # (migration 0007).
        Index("ix_ledger_entries_subject_prefix", "subject_prefix", "idx"),
        # Only outbox entries keep their ref (a waiter may look for it in the ledger; two
        # writers must never append one outbox row twice); a direct event's caller is
        # answered from the writer's memory, so its row stores none, and costs no entry in
        # this index (migration 0006).
        Index(
            "ledger_entries_ref_key",
            "ref",
            unique=True,
            postgresql_where=text("ref IS NOT NULL"),
            sqlite_where=text("ref IS NOT NULL"),
        ),
    )

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    ref: Mapped[str | None] = mapped_column(String(36), nullable=True)
    kind: Mapped[str] = mapped_column(String(48))
    actor: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    time_ms: Mapped[int] = mapped_column(BigInteger)
    # leaf.subject_prefix(subject); None when subject is None.
    subject_prefix: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class LedgerNode(Base):
    """The hash of a complete perfect subtree of the ledger's Merkle tree, at a level that
    is a positive multiple of ``exchange.ledger.store.STRATUM`` (those at other levels are
    folded from these and the leaf hashes when read; migration 0008)."""

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerHead(Base):
    """The single row saying how long the ledger is and what its last leaf hash was."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerCheckpoint(Base):
    """A signed C2SP checkpoint note, one per signed tree size."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    time_ms: Mapped[int] = mapped_column(BigInteger)


class LedgerOutbox(Base):
    """An event committed with the domain change it records, waiting to be appended."""

    __tablename__ = "ledger_outbox"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    ref: Mapped[str] = mapped_column(String(36), unique=True)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class IdentityProvider(Base):
    """A trusted identity provider whose bearer JWTs authenticate subjects."""

    __tablename__ = "identity_providers"

    issuer: Mapped[str] = mapped_column(String(300), primary_key=True)
    jwks: Mapped[dict[str, Any]] = mapped_column(JSON)
    algorithms: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FederationRequest(Base):
    """An answered federation request, so that a retry with the same id changes nothing."""

    __tablename__ = "federation_requests"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)


class PeerReceipt(Base):
    """The requesting node's receipt for an access this node logged at ``ledger_index``."""

    __tablename__ = "peer_receipts"

    ledger_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    province: Mapped[str] = mapped_column(String(2))
    receipt: Mapped[str] = mapped_column(Text)


class Consent(Base):
    """A subject's consent to one grantee for one national item (purpose)."""

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint("status_list", "status_idx"),
        Index("ix_consents_subject", "subject_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(18))
    grantee: Mapped[str] = mapped_column(String(80))
    national_item: Mapped[str] = mapped_column(String(8))
    item_code: Mapped[str] = mapped_column(String(33))
    scope: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_until: Mapped[int] = mapped_column(BigInteger)
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    status_list: Mapped[int] = mapped_column(ForeignKey("status_lists.id"))
    status_idx: Mapped[int] = mapped_column(Integer)
    artefact: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
