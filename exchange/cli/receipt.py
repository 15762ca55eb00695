"""``certex receipt verify``: check a tlog-proof@v1 receipt offline."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Annotated

import typer

from exchange.errors import ExchangeError

receipt_app = typer.Typer(help="Ledger receipts (C2SP tlog-proof@v1).", no_args_is_help=True)


@receipt_app.command("verify")
def verify(
    receipt: Annotated[Path, typer.Argument(help="the receipt file")],
    vkey: Annotated[str, typer.Option(help="the ledger's verifier key, or a file holding it")],
    leaf: Annotated[str, typer.Option(
        help="the entry's leaf bytes as standard base64 (GET /v1/ledger/entries, or the "
             "access log), or a file holding it")],
) -> None:
    """Verify the checkpoint's signature and that this exact leaf is included at the
    receipt's index. Exit 0 only if both hold."""
    from exchange.cli.main import value_or_file
    from exchange.ledger.note import Verifier
    from exchange.ledger.receipt import verify_receipt

    try:
        verifier = Verifier.from_vkey(value_or_file(vkey))
        raw = base64.b64decode(value_or_file(leaf), validate=True)
        # A file may carry extra trailing newlines (shells add one); the receipt ends with one.
        text = receipt.read_text().rstrip("\n") + "\n"
        v = verify_receipt(text, verifier=verifier, leaf_bytes=raw)
    except (ExchangeError, ValueError, binascii.Error, OSError) as e:
        detail = e.detail if isinstance(e, ExchangeError) else str(e)
        typer.echo(f"INVALID: {detail}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"OK: entry {v.index} is included in {v.checkpoint.origin} at tree size "
               f"{v.checkpoint.size}")
    typer.echo(json.dumps(json.loads(raw), ensure_ascii=False))
