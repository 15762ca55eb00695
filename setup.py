"""Only the optional C accelerator of the offline audit; the project is in pyproject.toml.

``exchange.ledger.audit._native`` needs a C compiler, the Python headers and OpenSSL's
(libssl-dev). Where it cannot be built the install still succeeds (``optional=True``) and
the audit runs its pure-Python scanner, which is the reference (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exchange.ledger.audit._native",
            ["exchange/ledger/audit/_native.c"],
            libraries=["crypto"],
            # SHA256_Init/Update/Final: deprecated in OpenSSL 3 in favour of EVP, kept
            # here for their lower per-call cost on 65-byte nodes.
            extra_compile_args=["-O3", "-Wall", "-Wno-deprecated-declarations"],
            optional=True,
        )
    ]
)
