"""The app's route table: every route is reached by its own paths whatever the order.

``create_app`` puts the routers' routes straight into one list, the busiest first (see the
comment there): that is only the same app as ``include_router`` would make if no route is
shadowed by one earlier in the list and no router carries dependencies of its own.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Match

import gateway.routers

# Every module in gateway/routers, found in the package rather than copied from the app's own
# list: a router file the app forgot to mount fails these tests.
MODULES = tuple(
    importlib.import_module(f"gateway.routers.{m.name}")
    for m in pkgutil.iter_modules(gateway.routers.__path__)
)
assert len(MODULES) >= 11, [m.__name__ for m in MODULES]


def _concrete(path: str) -> str:
    """A request path for a route pattern: every ``{param}`` replaced by a sample value."""
    return re.sub(r"\{[^}]+\}", "x1", path)


def _first_full(routes: list[Any], method: str, path: str) -> Any:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


def test_every_route_is_reached_by_its_own_paths(app: Any) -> None:
    api_routes = [r for r in app.router.routes if isinstance(r, APIRoute)]
    assert {r.unique_id for r in api_routes} == {
        r.unique_id for m in MODULES for r in m.router.routes
    }
    for route in api_routes:
        for method in route.methods:
            path = _concrete(route.path)
            assert _first_full(app.router.routes, method, path) is route, (method, path)
            # ... and no route of another router takes it in any order.
            others = [r for r in api_routes if r is not route and r.path != route.path]
            assert _first_full(others, method, path) is None, (method, path)


def test_routers_carry_no_dependencies_of_their_own() -> None:
    for module in MODULES:
        assert module.router.dependencies == [], module.__name__


def test_the_busiest_routes_are_tried_first(app: Any) -> None:
    paths = [getattr(r, "path", None) for r in app.router.routes]
    for hot in ("/v1/verify", "/v1/pull", "/v1/ledger/proof/inclusion"):
        assert paths.index(hot) < 8, paths
    assert paths.index("/openapi.json") > paths.index("/v1/federation/pull")


def test_openapi_lists_every_route(http: Any) -> None:
    spec = http.get("/openapi.json").json()
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    for module in MODULES:
        for r in module.router.routes:
            if r.include_in_schema:
                for method in r.methods:
                    assert (r.path, method) in documented
