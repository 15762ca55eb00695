"""The cross-province pull figure: two nodes, a bank at one, the consent at the other."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench import procs
from bench.config import TARGETS
from bench.loadgen import Request
from bench.procs import log
from bench.requests import mint_token, smoke
from bench.servers import NodeHome, Server

if TYPE_CHECKING:
    from bench.run import Bench


def federation_figures(b: Bench, kind: str, urls: dict[str, str],
                db_pids: Callable[[], list[int]] | None = None) -> None:
    """A bank at node 50 pulls a Guangdong (44) enterprise's licence under a consent held
    at 44: 50 fetches and checks the consent artefact and its status at 44, logs, forwards
    a signed request; 44 counts the use, logs, releases; the bank gets both receipts."""
    m = b.mode
    tag = "" if kind == "SQLite" else "-pg"
    homes = {p: NodeHome(f"fed{p}{tag}", b.work / f"fed{p}{tag}-home", urls[p],
                         procs.free_port(), province=p) for p in ("44", "50")}
    homes["50"].passphrase = homes["44"].passphrase
    homes["50"].subject_key = homes["44"].subject_key  # one federation subject key
    log(f"federation: two {kind} nodes (44 holds, 50 asks), certex init, federation file")
    for h in homes.values():
        h.init(b.logs)
    fed_file = b.work / f"federation{tag}.json"
    fed_file.write_text(json.dumps({"nodes": {
        p: {"base_url": h.base_url, "jwks": h.jwks()} for p, h in homes.items()}}))
    for h in homes.values():
        h.federation = fed_file
    world = homes["44"].seed(b.logs, m.subjects, 0, "--role", "holder",
                             "--region", "440106", "--grantee", "50:bank-bench")
    bank = homes["50"].seed(b.logs, 0, 0, "--role", "requester")["bank"]
    servers = [Server(f"node-fed{p}{tag}", "gateway.app:create_app", h.port, m.workers,
                      h.env(), b.logs, "/healthz") for p, h in homes.items()]
    b.section = (f"cross-province pull (two {kind} nodes, {m.workers} uvicorn worker(s) "
                    "each)")
    try:
        for s in servers:
            s.start()
        base = homes["50"].base_url
        token = (("Authorization", f"Bearer {mint_token(base, bank)}"),)
        reqs = [Request("POST", "/v1/pull", json.dumps({
            "subject_id": p["subject_id"], "item_code": world["item_code"],
            "consent_id": p["consent_id"]}).encode(), token) for p in world["subjects"]]
        smoke(base, reqs[0], "pull-federation")
        # Seconds of latency at 64 connections: a longer warmup reaches steady state.
        r = b.load(f"pull-federation{tag}", servers[1], reqs,
                      warmup=max(m.warmup, 3.0), duration=max(m.duration, 6.0),
                      server_pids=lambda: [p for s in servers for p in s.all_pids()],
                      db_pids=db_pids)
        rss = max(s.peak_rss_mb() for s in servers)
    finally:
        for s in servers:
            s.stop()
    on = "" if kind == "SQLite" else f" on {kind}"
    b.http_figures(f"pull 50 → 44{on} (both nodes log, two receipts)", r, at_least=None)
    b.raw[f"rss-federation{tag}"] = rss
    b.fig(f"cross-province nodes{on}: peak RSS per worker", rss, "MB",
             target=f"≤ {TARGETS['rss-mb']:.0f} MB", met=rss <= TARGETS["rss-mb"])
