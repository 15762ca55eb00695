"""SD-JWT (RFC 9901) for SD-JWT VC credentials (draft-ietf-oauth-sd-jwt-vc).

What we issue, and all the verifier accepts:

* one Disclosure ``[salt, name, value]`` per *top-level* selectively disclosable claim
  (RFC 9901 §4.2.1), salts of 128 bits from the caller's RNG (§4.2.1, §9.3);
* the digests in one sorted top-level ``_sd`` array, optionally mixed with decoys
  (§4.2.5), with ``_sd_alg: "sha-256"`` (§4.1.1);
* the compact serialisation ``<issuer-jwt>~<d1>~...~<dN>~`` (§4).

Array-element Disclosures (``{"...": digest}``), ``_sd`` arrays nested inside claim values
and Disclosures whose values contain further digests are never issued by us; the verifier
refuses them (``disclosure-invalid``) instead of half-processing them. Key Binding JWTs
(§4.3) are not supported yet: a presentation carrying one is refused
(``key-binding-unsupported``) rather than accepted with the binding ignored.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.crypto.canonical import canonical_json, parse_json
from exchange.crypto.encoding import b64url_decode, b64url_encode
from exchange.crypto.jws import SigningKey, check_claims, sign_jwt, verify_jwt_signature
from exchange.errors import InvalidInput, VerificationFailed

__all__ = [
    "SD_ALG",
    "SD_JWT_TYPS",
    "Disclosure",
    "VerifiedSdJwt",
    "decode_disclosure",
    "disclosure_digest",
    "issue_sd_jwt",
    "open_sd_jwt",
    "present",
    "split_sd_jwt",
    "verify_sd_jwt",
]

SD_ALG: Final = "sha-256"
"""The only ``_sd_alg`` (RFC 9901 §4.1.1, IANA "Named Information Hash Algorithm")."""
SD_JWT_TYPS: Final = ("dc+sd-jwt", "vc+sd-jwt")
"""``typ`` values an SD-JWT VC verifier accepts: current and legacy."""
SALT_BYTES: Final = 16
# SD-JWT VC §3.2.2.2: these claims MUST NOT be selectively disclosable.
NEVER_DISCLOSABLE: Final = frozenset({"iss", "nbf", "exp", "cnf", "vct", "vct#integrity", "status"})
_RESERVED_NAMES: Final = frozenset({"_sd", "...", "_sd_alg"})
_SEPARATOR: Final = "~"
_DISCLOSURE_FORM: Final = re.compile(r"[A-Za-z0-9_-]+")
# The signature segment may be empty here so that an unsigned token is reported as
# alg-not-allowed by the JWS layer rather than as a parse error.
_JWS_FORM: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _invalid(detail: str) -> VerificationFailed:
    return VerificationFailed(detail, code="disclosure-invalid")


@dataclass(frozen=True, slots=True)
class Disclosure:
    """A decoded object-property Disclosure and its digest (RFC 9901 §4.2.1, §4.2.3)."""

    salt: str
    name: str
    value: Any
    digest: str


@dataclass(frozen=True, slots=True)
class VerifiedSdJwt:
    """An SD-JWT whose signature, Disclosures and validity window have been checked
    (the window only by :func:`verify_sd_jwt`, not by :func:`open_sd_jwt`).

    ``claims`` are the issuer's plain claims (without ``_sd``/``_sd_alg``); ``disclosed``
    maps each presented Disclosure's claim name to its value.
    """

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    disclosed: dict[str, Any]
    disclosures: tuple[Disclosure, ...]


def disclosure_digest(encoded: str) -> str:
    """base64url(SHA-256(ASCII(encoded Disclosure))) (RFC 9901 §4.2.3)."""
    return b64url_encode(hashlib.sha256(encoded.encode("ascii")).digest())


def _has_sd_markers(value: Any) -> bool:
    """Whether ``value`` holds ``_sd`` members or ``{"...": x}`` array elements anywhere."""
    if isinstance(value, dict):
        return "_sd" in value or any(_has_sd_markers(v) for v in value.values())
    if isinstance(value, list):
        return any(
            (isinstance(v, dict) and "..." in v) or _has_sd_markers(v) for v in value
        )
    return False


def issue_sd_jwt(
    *,
    key: SigningKey,
    plain_claims: Mapping[str, Any],
    disclosable: Mapping[str, Any],
    typ: str = "dc+sd-jwt",
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
    decoys: int = 0,
) -> str:
    """Issue ``<issuer-jwt>~<disclosure>~...~`` with one Disclosure per disclosable claim."""
    overlap = plain_claims.keys() & disclosable.keys()
    if overlap:
        raise InvalidInput(f"claims both plain and disclosable: {sorted(overlap)}")
    if _RESERVED_NAMES & plain_claims.keys() or _RESERVED_NAMES & disclosable.keys():
        raise InvalidInput("_sd, _sd_alg and ... are reserved claim names")
    if NEVER_DISCLOSABLE & disclosable.keys():
        raise InvalidInput(f"{sorted(NEVER_DISCLOSABLE & disclosable.keys())} must stay plain")
    if _has_sd_markers(dict(plain_claims)) or _has_sd_markers(dict(disclosable)):
        raise InvalidInput("claim values may not contain _sd or ... members")
    if not isinstance(decoys, int) or decoys < 0:
        raise InvalidInput("decoys must be a non-negative integer")

    def fresh_salt() -> bytes:
        value = salt()
        if len(value) < SALT_BYTES:
            raise InvalidInput("salts must have at least 128 bits")
        return value

    encoded: list[str] = []
    for name, value in disclosable.items():
        if not isinstance(name, str):
            raise InvalidInput("claim names must be strings")
        # RFC 9901 §4.2.1: the Disclosure is the base64url of the UTF-8 JSON array.
        encoded.append(b64url_encode(canonical_json([b64url_encode(fresh_salt()), name, value])))
    # RFC 9901 §4.2.5: a decoy is the digest of a random value no Disclosure will match.
    digests = [disclosure_digest(d) for d in encoded]
    digests += [b64url_encode(hashlib.sha256(fresh_salt()).digest()) for _ in range(decoys)]
    payload: dict[str, Any] = dict(plain_claims)
    if digests:
        payload["_sd"] = sorted(digests)  # §4.2.4.1: hide the claims' order
    payload["_sd_alg"] = SD_ALG
    issuer_jwt = sign_jwt(payload, key, typ=typ)
    return _SEPARATOR.join([issuer_jwt, *encoded, ""])


def split_sd_jwt(s: str) -> tuple[str, list[str], str | None]:
    """Split compact SD-JWT into (issuer JWT, Disclosures, Key Binding JWT or None)."""
    if not isinstance(s, str) or _SEPARATOR not in s:
        raise VerificationFailed("not an SD-JWT: no ~ separator", code="malformed")
    issuer_jwt, *disclosures, last = s.split(_SEPARATOR)
    if _JWS_FORM.fullmatch(issuer_jwt) is None:
        raise VerificationFailed("the issuer-signed JWT is not a compact JWS", code="malformed")
    if not all(_DISCLOSURE_FORM.fullmatch(d) for d in disclosures):
        raise VerificationFailed("empty or non-base64url Disclosure", code="malformed")
    if last and _JWS_FORM.fullmatch(last) is None:
        raise VerificationFailed("the Key Binding JWT is not a compact JWS", code="malformed")
    return issuer_jwt, disclosures, last or None


def decode_disclosure(d: str) -> Disclosure:
    """Decode one object-property Disclosure; array-element Disclosures are refused."""
    try:
        array = parse_json(b64url_decode(d))
    except InvalidInput as e:
        raise _invalid("Disclosure is not base64url JSON") from e
    if not isinstance(array, list) or len(array) != 3:
        raise _invalid("Disclosure is not a [salt, name, value] array")
    salt, name, value = array
    if not isinstance(salt, str) or not isinstance(name, str):
        raise _invalid("Disclosure salt and name must be strings")
    if name in _RESERVED_NAMES:
        raise _invalid(f"Disclosure uses the reserved claim name {name!r}")
    return Disclosure(salt=salt, name=name, value=value, digest=disclosure_digest(d))


def present(sd_jwt: str, keep: Collection[str]) -> str:
    """The issuer JWT plus only the Disclosures whose claim names are in ``keep``."""
    if isinstance(keep, str):
        raise InvalidInput("keep must be a collection of claim names, not one string")
    issuer_jwt, disclosures, kb_jwt = split_sd_jwt(sd_jwt)
    if kb_jwt is not None:
        raise InvalidInput("a presentation with a Key Binding JWT cannot be re-presented")
    kept = [d for d in disclosures if decode_disclosure(d).name in keep]
    return _SEPARATOR.join([issuer_jwt, *kept, ""])


def verify_sd_jwt(
    sd_jwt: str,
    resolve_key: Callable[[Mapping[str, Any], Mapping[str, Any]], Ed25519PublicKey],
    *,
    now: float,
    typ: Collection[str] = SD_JWT_TYPS,
    leeway: float = 30,
) -> VerifiedSdJwt:
    """Verify an SD-JWT (RFC 9901 §7.1, §7.3) and return plain and disclosed claims.

    ``resolve_key`` gets the unverified header and unverified payload (for ``iss``) and
    returns the issuer's key or raises ``VerificationFailed(code="unknown-key")``.
    """
    verified = open_sd_jwt(sd_jwt, resolve_key, typ=typ)
    # 8. Validity window at `now`: exp, nbf, and iat not in the future (§7.1 step 5).
    check_claims(verified.claims, now=now, leeway=leeway)
    return verified


def open_sd_jwt(
    sd_jwt: str,
    resolve_key: Callable[[Mapping[str, Any], Mapping[str, Any]], Ed25519PublicKey],
    *,
    typ: Collection[str] = SD_JWT_TYPS,
) -> VerifiedSdJwt:
    """Every check of :func:`verify_sd_jwt` but the validity window, which the caller
    checks (``check_claims`` on ``claims``) before relying on the result: what this
    returns depends only on ``sd_jwt`` and the key ``resolve_key`` returns."""
    # 1. Parse the serialisation; no Key Binding support yet, so refuse one (§7.3).
    issuer_jwt, encoded, kb_jwt = split_sd_jwt(sd_jwt)
    if kb_jwt is not None:
        raise VerificationFailed(
            "Key Binding JWTs are not supported", code="key-binding-unsupported"
        )
    # 2.-4. Header alg allowlist and typ; the issuer's key; the signature (§7.1 step 2).
    signed = verify_jwt_signature(issuer_jwt, resolve_key, typ=typ)
    payload = signed.unchecked_claims
    # 5. The digest algorithm (§4.1.1): absent means sha-256; nothing else is allowed.
    if payload.get("_sd_alg", SD_ALG) != SD_ALG:
        raise VerificationFailed("unsupported _sd_alg", code="alg-not-allowed")
    digests = payload.get("_sd", [])
    if not isinstance(digests, list) or not all(isinstance(x, str) for x in digests):
        raise _invalid("_sd must be an array of strings")
    if len(set(digests)) != len(digests):  # §7.1 step 4: a digest may appear only once
        raise _invalid("a digest appears twice in _sd")
    plain = {k: v for k, v in payload.items() if k not in ("_sd", "_sd_alg")}
    if _has_sd_markers(plain):
        raise _invalid("nested or array Disclosures are not supported")
    # 6. Each Disclosure: decoded, not repeated, referenced exactly once from _sd.
    disclosures = tuple(decode_disclosure(d) for d in encoded)
    if len({d.digest for d in disclosures}) != len(disclosures):
        raise VerificationFailed("a Disclosure is presented twice", code="disclosure-duplicate")
    referenced = set(digests)
    disclosed: dict[str, Any] = {}
    for disclosure in disclosures:
        if disclosure.digest not in referenced:
            raise VerificationFailed(
                f"Disclosure for {disclosure.name!r} is not referenced by the issuer",
                code="disclosure-unreferenced",
            )
        # 7. The claim name must be new at this level, and the value plain (§7.1 step 3.2).
        if disclosure.name in payload or disclosure.name in disclosed:
            raise _invalid(f"claim {disclosure.name!r} is already present")
        if disclosure.name in NEVER_DISCLOSABLE:  # SD-JWT VC §3.2.2.2
            raise _invalid(f"claim {disclosure.name!r} may not be selectively disclosable")
        if _has_sd_markers(disclosure.value):
            raise _invalid("recursive Disclosures are not supported")
        disclosed[disclosure.name] = disclosure.value
    return VerifiedSdJwt(
        header=signed.header, claims=plain, disclosed=disclosed, disclosures=disclosures
    )
