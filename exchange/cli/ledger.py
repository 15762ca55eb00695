"""``certex ledger export`` and ``certex audit verify`` (offline)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from exchange.cli.main import _fail, _node, err, value_or_file
from exchange.errors import ExchangeError

ledger_app = typer.Typer(help="The access ledger: export it for auditors.", no_args_is_help=True)
audit_app = typer.Typer(
    help="Offline audit of a ledger export (no node, no database).", no_args_is_help=True
)


class _ProgressBar:
    """A rich progress bar on stderr, shown for long runs (> 10,000 entries) or on a TTY."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total <= 10_000 and not err.is_terminal:
                return
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done, total=max(total, done))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@ledger_app.command("export")
def ledger_export(
    out_file: Annotated[
        Path,
        typer.Option(
            "--out", metavar="FILE", help="file to write ('-' for stdout); written atomically"
        ),
    ],
) -> None:
    """Export the ledger up to its latest signed checkpoint, for `certex audit verify`:
    JSON Lines (certex-ledger-export/1), a header, one line per entry with the base64 of the
    exact leaf bytes, then the signed checkpoint. Streams; safe while the node is running."""
    from exchange.ledger.export import export_ledger

    bar = _ProgressBar("exporting")
    try:
        with _node() as node:
            if str(out_file) == "-":
                summary = export_ledger(node, sys.stdout, bar)
            else:
                partial = out_file.with_name(out_file.name + ".partial")
                try:
                    with partial.open("w", encoding="utf-8", newline="\n") as f:
                        summary = export_ledger(node, f, bar)
                    partial.replace(out_file)
                finally:
                    partial.unlink(missing_ok=True)
    except (ExchangeError, OSError) as e:
        raise _fail(e) from e
    finally:
        bar.close()
    err.print(
        f"exported {summary.entries} entries of {summary.origin} "
        f"(checkpoint size {summary.size}) to {out_file}",
        highlight=False,
    )


def _read_vkey(value: str) -> Any:
    """``--vkey``: the verifier key itself, or a file holding it."""
    from exchange.ledger.note import Verifier

    try:
        return Verifier.from_vkey(value_or_file(value))
    except ExchangeError as e:
        raise _fail(e) from e


def _read_note(path: Path) -> str:
    try:
        note = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(e) from e
    return note if note.endswith("\n") else note + "\n"  # editors may drop the last newline


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="the export ('-' for stdin)")],
    vkey: Annotated[
        str,
        typer.Option(
            metavar="KEY", help="the node's ledger verifier key (name+id+key), or a file with it"
        ),
    ],
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="an older signed checkpoint you kept, to prove the log only grew (repeatable)",
        ),
    ] = None,
) -> None:
    """Verify a ledger export offline: every leaf hash and the hash chain, every subject
    back-pointer, the Merkle root, the checkpoint signature, and consistency with older
    checkpoints. Exit 0 only if everything holds; 1 names the first bad index and the
    problem (edited, missing, reordered, truncated, forked, bad-signature, malformed).
    CERTEX_AUDIT_NATIVE=0 scans with the Python code alone (same result, slower)."""
    import base64

    from exchange.ledger.audit import AuditFailed, audit_export

    verifier = _read_vkey(vkey)
    olders = [_read_note(p) for p in checkpoint or []]
    bar = _ProgressBar("verifying")
    try:
        if str(file) == "-":  # read once, in blocks (exchange.ledger.audit.files)
            report = audit_export(
                sys.stdin.buffer, verifier=verifier, older_checkpoint=olders, progress=bar
            )
        else:
            with file.open(encoding="utf-8") as lines:
                report = audit_export(
                    lines, verifier=verifier, older_checkpoint=olders, progress=bar
                )
    except AuditFailed as e:
        bar.close()
        typer.echo(f"FAIL {e.describe()}")
        raise typer.Exit(1) from e
    except UnicodeDecodeError as e:
        bar.close()
        typer.echo(f"FAIL export: malformed — the export is not UTF-8 ({e.reason})")
        raise typer.Exit(1) from e
    except OSError as e:
        raise _fail(e) from e
    finally:
        bar.close()
    cp = report.checkpoint
    older = ", ".join(str(c.size) for c in report.consistent_with) or "none given"
    typer.echo(
        f"OK {cp.origin}: {cp.size} entries, root {base64.b64encode(cp.root).decode()}; "
        f"chain, {report.subjects} subject chains and signature verified; "
        f"extends older checkpoints: {older}"
    )


