"""The `privrec` command line (Typer, with rich progress bars and tables).

`app` is the entry point (`privrec = "privrec.cli:app"`); each command module registers its
commands on it when imported.
"""

from privrec.cli import audit, data, evaluate, items, reports, serve
from privrec.cli.common import app

__all__ = ["app", "audit", "data", "evaluate", "items", "reports", "serve"]
