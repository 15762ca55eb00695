"""Node settings, read from the environment (prefix ``CERTEX_``), as DESIGN.md §5 lists them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from exchange.identifiers.region import PROVINCES


class Settings(BaseSettings):
    """Everything a node needs to know about itself. Immutable once built."""

    model_config = SettingsConfigDict(env_prefix="CERTEX_", frozen=True, extra="ignore")

    home: Path = Field(
        default=Path("."), description="data dir: keys in HOME/keys, SQLite in HOME/var"
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL")
    node: str = Field(default="31", description="GB/T 2260 province code of this node")
    base_url: str = Field(default="http://127.0.0.1:8000", description="public base URL")
    federation: Path | None = Field(default=None, description="federation peers file")
    subject_key: str | None = Field(default=None, description="base64 pseudonym key")
    key_passphrase: str | None = Field(default=None, description="passphrase for keys/*.pem")
    dev: bool = Field(default=False, description="dev IdP and seeded demo data")
    access_token_ttl: int = Field(default=600, ge=30, le=600)
    status_list_ttl: int = Field(default=60, ge=0, le=86_400)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    verify_memo: int = Field(
        default=4096, ge=0, le=1_000_000,
        description="credentials POST /v1/verify remembers as signature-checked, so one "
        "presented again is not checked again (0: none); window, key and status are "
        "checked on every request",
    )
    threads: int = Field(
        default=16, ge=1, le=256,
        description="worker threads per process for blocking request work (and the size of "
        "its database connection pool)",
    )

    @field_validator("node")
    @classmethod
    def _known_province(cls, v: str) -> str:
        if v not in PROVINCES:
            raise ValueError(
                f"CERTEX_NODE must be one of the 31 GB/T 2260 province codes, not {v!r}"
            )
        return v

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def var_dir(self) -> Path:
        return self.home / "var"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'certex.db').resolve()}"
