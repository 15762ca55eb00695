"""``python -m exchange.cli`` = ``certex``."""

from exchange.cli.main import app

app()
