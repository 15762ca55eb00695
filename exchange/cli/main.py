"""``certex``: run and administer a node. Every verb has ``--help``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from exchange.errors import ExchangeError

app = typer.Typer(
    name="certex",
    help="A province node of the cross-agency electronic certificate exchange. "
    "Settings come from CERTEX_* environment variables (see README).",
    no_args_is_help=True,
    add_completion=False,
)
agency_app = typer.Typer(help="Issuing agencies (发证机关).", no_args_is_help=True)
client_app = typer.Typer(help="OAuth clients: banks, agencies, auditors.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)
idp_app = typer.Typer(help="Identity providers trusted for subject tokens.", no_args_is_help=True)
jwk_app = typer.Typer(
    help="Client-side key tools (run by the client, not the node).", no_args_is_help=True
)
app.add_typer(agency_app, name="agency")
app.add_typer(client_app, name="client")
app.add_typer(keys_app, name="keys")
app.add_typer(jwk_app, name="jwk")
app.add_typer(idp_app, name="idp")


def _add_dev_commands() -> None:
    from exchange.cli.dev import dev_app
    from exchange.cli.ledger import audit_app, ledger_app
    from exchange.cli.receipt import receipt_app

    app.add_typer(dev_app, name="dev")
    app.add_typer(receipt_app, name="receipt")
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(audit_app, name="audit")

    from exchange.cli.federation import federation_view

    app.command("federation")(federation_view)


out = Console()
err = Console(stderr=True)


def _fail(e: Exception) -> typer.Exit:
    detail = e.detail if isinstance(e, ExchangeError) else str(e)
    code = f" [{e.code}]" if isinstance(e, ExchangeError) else ""
    err.print(f"[red]error{escape(code)}:[/red] {escape(detail)}", highlight=False)
    return typer.Exit(2)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _fail(e) from e


def value_or_file(value: str) -> str:
    """A CLI value given inline, or the content of the file it names."""
    try:
        p = Path(value)
        if p.is_file():
            return p.read_text(encoding="utf-8").strip()
    except OSError:  # too long or otherwise not a path: the value itself
        pass
    return value.strip()


@app.command()
def init(
    demo: Annotated[
        bool | None, typer.Option(help="seed demo data (default: on in dev mode)")
    ] = None,
) -> None:
    """Create or upgrade the database (alembic), create node keys; in dev mode seed demo data."""
    from exchange.bootstrap import ensure_node_keys, migrate, seed_demo
    from exchange.node import Node
    from exchange.settings import Settings

    try:
        settings = Settings()
        migrate(settings)
        node = Node.open(settings, pool_size=2)
        try:
            with node.sessions.begin() as session:
                made = ensure_node_keys(session, node)
            info = None
            if demo if demo is not None else settings.dev:
                with node.sessions.begin() as session:
                    info = seed_demo(session, node, settings.var_dir / "demo")
        finally:
            node.close()
    except ExchangeError as e:
        raise _fail(e) from e
    out.print(f"database ready: {settings.effective_database_url}")
    out.print(f"node {settings.node} keys: {', '.join(made) if made else 'already present'}")
    if info:
        out.print(f"demo data: {settings.var_dir / 'demo' / 'demo.json'}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the node's HTTP API (uvicorn)."""
    import uvicorn

    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        proxy_headers=False,
    )


@agency_app.command("add")
def agency_add(
    uscc: Annotated[str, typer.Option(help="the agency's unified social credit code")],
    name: Annotated[str, typer.Option(help="the agency's name")],
    types: Annotated[str, typer.Option(help="comma-separated certificate types it may issue")],
    jwk: Annotated[Path, typer.Option(help="file with the agency's public Ed25519 JWK")],
) -> None:
    """Register an issuing agency; the node generates and holds its signing key."""
    from exchange.clients.agencies import register_agency

    with _node() as node, node.sessions.begin() as session:
        try:
            register_agency(
                session,
                node,
                uscc=uscc,
                name=name,
                types=[t.strip() for t in types.split(",") if t.strip()],
                jwk=_read_json(jwk),
            )
        except ExchangeError as e:
            raise _fail(e) from e
    out.print(f"agency {uscc} registered; client id {uscc}")


@client_app.command("add")
def client_add(
    id: Annotated[str, typer.Option("--id", help="client id")],
    name: Annotated[str, typer.Option(help="display name")],
    kind: Annotated[str, typer.Option(help="bank | agency | auditor")],
    jwk: Annotated[Path, typer.Option(help="file with the client's public Ed25519 JWK")],
    items: Annotated[str, typer.Option(help="comma-separated item codes it may use")] = "",
) -> None:
    """Register an OAuth client (private_key_jwt)."""
    from exchange.clients.service import register_client

    with _node() as node, node.sessions.begin() as session:
        try:
            register_client(
                session,
                client_id=id,
                name=name,
                kind=kind,
                jwk=_read_json(jwk),
                items=[i.strip() for i in items.split(",") if i.strip()],
                now=node.clock.now(),
            )
        except ExchangeError as e:
            raise _fail(e) from e
    out.print(f"client {id} registered")


@keys_app.command("rotate")
def keys_rotate(
    agency: Annotated[str | None, typer.Option(help="rotate this agency's signing key")] = None,
    node_role: Annotated[str | None, typer.Option(help="token | status | consent")] = None,
) -> None:
    """Retire the current key (it stays published) and sign with a new one from now on."""
    from exchange.identifiers import validate_uscc
    from exchange.keys.service import agency_owner

    if (agency is None) == (node_role is None):
        raise _fail(ValueError("give exactly one of --agency USCC or --node-role ROLE"))
    if node_role is not None and node_role not in ("token", "status", "consent"):
        raise _fail(ValueError("--node-role must be token, status or consent"))
    with _node() as node, node.sessions.begin() as session:
        try:
            if agency is not None:
                validate_uscc(agency)
                from exchange.persistence.models import Agency

                if session.get(Agency, agency) is None:
                    raise _fail(ValueError(f"no agency {agency}"))
                owner = agency_owner(agency)
            else:
                owner = f"node:{node_role}"
            key = node.keys.rotate(session, owner)
        except ExchangeError as e:
            raise _fail(e) from e
    out.print(f"{owner} now signs with kid {key.kid}")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="file holding the SD-JWT VC ('-' for stdin)")],
    jwks: Annotated[list[Path], typer.Option(help="issuer metadata or JWKS file (repeatable)")],
    status_list: Annotated[
        Path | None, typer.Option(help="a statuslist+jwt file to check status")
    ] = None,
) -> None:
    """Verify a certificate offline: signature, typ, alg, window, disclosures, and (given a
    status-list token signed by a key in --jwks) its status. Exit 0 only if valid."""
    from exchange.certificates.offline import verify_offline

    text = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        v = verify_offline(
            text.strip(),
            [_read_json(p) for p in jwks],
            status_list.read_text().strip() if status_list else None,
        )
    except ExchangeError as e:
        out.print_json(json.dumps({"valid": False, "reason": e.code, "detail": e.detail}))
        raise typer.Exit(1) from e
    out.print_json(
        json.dumps(
            {
                "valid": True,
                "issuer": v.issuer,
                "type": v.type,
                "certificate_id": v.certificate_id,
                "status": v.status,
                "disclosed": dict(v.disclosed),
            },
            ensure_ascii=False,
        )
    )


@jwk_app.command("generate")
def jwk_generate(
    out_file: Annotated[Path, typer.Option("--out", help="private JWK file (mode 0600)")],
    public: Annotated[Path, typer.Option(help="public JWK file, to register with the node")],
) -> None:
    """Generate a client's Ed25519 key pair as JWK files."""
    from exchange.clients.tools import write_jwk_pair

    pub = write_jwk_pair(out_file, public)
    out.print(f"kid {pub['kid']}: private {out_file}, public {public}")


@jwk_app.command("assertion")
def jwk_assertion(
    client_id: Annotated[str, typer.Option(help="the client id (iss = sub)")],
    key: Annotated[Path, typer.Option(help="the client's private JWK file")],
    token_url: Annotated[
        str | None, typer.Option(help="aud; default {CERTEX_BASE_URL}/oauth2/token")
    ] = None,
) -> None:
    """Print a fresh RFC 7523 client assertion (2 minutes, unique jti) for POST /oauth2/token."""
    import time

    from exchange.clients.tools import client_assertion, signing_key_from_private_jwk
    from exchange.settings import Settings

    aud = token_url or f"{Settings().base_url}/oauth2/token"
    try:
        sk = signing_key_from_private_jwk(_read_json(key))
    except ExchangeError as e:
        raise _fail(e) from e
    typer.echo(client_assertion(sk, client_id=client_id, token_url=aud, now=time.time()))


@idp_app.command("add")
def idp_add(
    issuer: Annotated[str, typer.Option(help="the identity provider's issuer URL (tokens' iss)")],
    jwks: Annotated[Path, typer.Option(help="file with its public keys as a JWKS")],
    algorithms: Annotated[str, typer.Option(help="comma-separated allowlist")] = "EdDSA",
) -> None:
    """Trust an identity provider: subject tokens need iss = ISSUER, aud = the node's base URL,
    exp, and sub = an 18-character resident ID or USCC."""
    from exchange.subjects.service import add_identity_provider

    with _node() as node, node.sessions.begin() as session:
        try:
            add_identity_provider(session, issuer=issuer, jwks=_read_json(jwks),
                                  algorithms=tuple(a.strip() for a in algorithms.split(",")),
                                  now=node.clock.now())
        except ExchangeError as e:
            raise _fail(e) from e
    out.print(f"identity provider {issuer} trusted")


@app.command("dev-token")
def dev_token(
    subject: Annotated[str, typer.Option(help="resident ID or USCC to log in as")],
    ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600,
) -> None:
    """Print a subject token from the node's dev IdP. Dev mode (CERTEX_DEV=1) only."""
    from exchange.subjects.service import issue_dev_token

    with _node() as node, node.sessions.begin() as session:
        try:
            token = issue_dev_token(session, node, subject, ttl=min(ttl, 86_400))
        except ExchangeError as e:
            raise _fail(e) from e
    typer.echo(token)


@app.command()
def walkthrough() -> None:
    """Print the URLs and the curl walk-through for the demo data (after dev-mode `certex init`)."""
    from exchange.cli.walkthrough import render
    from exchange.settings import Settings

    settings = Settings()
    demo = settings.var_dir / "demo" / "demo.json"
    if not demo.exists():
        raise _fail(ValueError(f"{demo} does not exist; run `CERTEX_DEV=1 certex init` first"))
    typer.echo(render(settings.base_url, demo))


class _node:  # noqa: N801  used as `with _node() as node`
    def __enter__(self) -> Any:
        from exchange.node import Node
        from exchange.settings import Settings

        try:
            self.node = Node.open(Settings(), pool_size=2)
        except ExchangeError as e:
            raise _fail(e) from e
        return self.node

    def __exit__(self, *exc: object) -> None:
        self.node.close()


_add_dev_commands()  # after _fail and _node exist: those modules import them


def main() -> None:  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
