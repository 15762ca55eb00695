"""The machine's FastAPI ceiling: a tiny app served exactly like the node (same uvicorn
command line), with one ``async def`` and one plain ``def`` endpoint returning small JSON.

``uvicorn bench.bare_app:create_app --factory``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI(title="bare", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/bare")
    async def bare() -> dict[str, Any]:
        return {"ok": True, "n": 1}

    @app.get("/bare-sync")
    def bare_sync() -> dict[str, Any]:
        return {"ok": True, "n": 1}

    return app
