"""``certex federation``: this node's view of its peers."""

from __future__ import annotations

import typer


def federation_view() -> None:
    """Show each peer in the federation file: reachable, keys, latest checkpoint size."""
    import httpx  # here, not at the top: every certex verb imports this module
    from rich.console import Console
    from rich.table import Table

    from exchange.ledger.checkpoint import parse_checkpoint
    from exchange.ledger.note import parse_unverified_note
    from exchange.settings import Settings

    settings = Settings()
    if settings.federation is None:
        typer.echo("no federation file (CERTEX_FEDERATION): this is a single node", err=True)
        raise typer.Exit(2)
    from exchange.errors import ExchangeError
    from exchange.federation.config import load_federation

    try:
        fed = load_federation(settings.federation, settings.node)
    except ExchangeError as e:
        typer.echo(f"error: {e.detail}", err=True)
        raise typer.Exit(2) from e
    table = Table(title=f"node {settings.node}: federation view")
    for col in ("province", "base_url", "reachable", "keys (kid)", "checkpoint size",
                "keys match"):
        table.add_column(col)
    for peer in fed.peers():
        reachable, size, match = "no", "-", "-"
        try:
            httpx.get(f"{peer.base_url}/healthz", timeout=3).raise_for_status()
            reachable = "yes"
            note = httpx.get(f"{peer.base_url}/v1/ledger/checkpoint", timeout=3).text
            size = str(parse_checkpoint(parse_unverified_note(note).text).size)
            served = {k["kid"] for k in
                      httpx.get(f"{peer.base_url}/.well-known/jwks.json", timeout=3).json()["keys"]}
            match = "yes" if set(peer.keys) <= served else "NO: served keys differ"
        except (httpx.HTTPError, ExchangeError, ValueError, KeyError):
            pass
        table.add_row(peer.province, peer.base_url, reachable,
                      ", ".join(k[:10] + "…" for k in sorted(peer.keys)), size, match)
    Console().print(table)
