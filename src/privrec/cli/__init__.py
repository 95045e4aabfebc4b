"""The `privrec` command line (Typer, with rich progress bars and tables).

`app` is the entry point (`privrec = "privrec.cli:app"`); each command module registers its
commands on it when imported.
"""

from privrec.cli import (
    audit,
    data,
    evaluate,
    experiments,
    finetune,
    items,
    remote,
    reports,
    scale,
    schedule,
    search,
    serve,
)
from privrec.cli.common import app

remote.install(app)  # last: commands go through a running server's HTTP API (cli/remote.py)

__all__ = [
    "app",
    "audit",
    "data",
    "evaluate",
    "experiments",
    "finetune",
    "items",
    "remote",
    "reports",
    "scale",
    "schedule",
    "search",
    "serve",
]
