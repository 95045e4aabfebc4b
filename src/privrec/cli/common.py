"""What every `privrec` command shares: the Typer app, consoles, options, errors, progress."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from privrec.core.errors import PrivrecError
from privrec.core.settings import Settings

if TYPE_CHECKING:
    from privrec.service import RecSys

app = typer.Typer(
    name="privrec",
    help="Privacy-preserving recommendations for e-commerce, with utility and privacy measured.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(emoji=False)  # ":train:" in a name must print as it is
err = Console(stderr=True, emoji=False)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default ./privrec-data or $PRIVREC_DATA_DIR)."
    ),
]


def settings_of(data_dir: Path | None) -> Settings:
    """Settings for `--data-dir` (or the defaults and the environment)."""
    return Settings(data_dir=data_dir) if data_dir else Settings()


def open_recsys(data_dir: Path | None) -> RecSys:
    """The service over the data directory."""
    # imported here: `privrec --help` should not pay for loading the models' libraries
    from privrec.cli.runtime import refuse_if_served
    from privrec.service import RecSys

    settings = settings_of(data_dir)
    refuse_if_served(settings.data_dir)  # a running server holds the store: say so clearly
    return RecSys(settings)


@contextmanager
def errors() -> Iterator[None]:
    """Show privrec's own errors as one clear line and exit 2, instead of a traceback."""
    try:
        yield
    except PrivrecError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def progress() -> Progress:
    """A rich progress display with a bar, counts and elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """privrec: behaviour in, privacy first; recommendations out, measured."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s %(message)s",
    )


def parse_params(items: list[str], *, option: str = "--param") -> dict[str, Any]:
    """NAME=VALUE options as a dict (each value parsed as JSON where it is JSON)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint=option)
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
