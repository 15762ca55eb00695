"""Only the optional C accelerators; the project is in pyproject.toml.

``exchange.ledger.audit._native`` (the offline audit's scanner) and ``exchange.ledger._batch``
(the ledger writer's leaves) need a C compiler, the Python headers and OpenSSL's
(libssl-dev). Where they cannot be built the install still succeeds (``optional=True``) and
the pure-Python code they accelerate runs, which is the reference (same results, slower).
"""

from setuptools import Extension, setup


def _optional(name: str, source: str) -> Extension:
    return Extension(
        name,
        [source],
        libraries=["crypto"],
        # SHA256_Init/Update/Final: deprecated in OpenSSL 3 in favour of EVP, kept here for
        # their lower per-call cost on 65-byte nodes.
        extra_compile_args=["-O3", "-Wall", "-Wno-deprecated-declarations"],
        optional=True,
    )


setup(
    ext_modules=[
        _optional("exchange.ledger.audit._native", "exchange/ledger/audit/_native.c"),
        _optional("exchange.ledger._batch", "exchange/ledger/_batch.c"),
    ]
)
