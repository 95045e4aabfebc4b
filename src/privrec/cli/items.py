"""`privrec items`: the shop's product catalogue from a file, without writing Python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from privrec.cli.common import DataDir, app, console, err, errors, open_recsys

items_app = typer.Typer(
    name="items",
    help="The product catalogue: import titles, prices and stock.",
    no_args_is_help=True,
)
app.add_typer(items_app, name="items")


@items_app.command("import")
def import_items(
    path: Annotated[
        Path,
        typer.Argument(
            help="A JSONL, CSV (with a header) or Parquet catalogue.", exists=True, dir_okay=False
        ),
    ],
    data_dir: DataDir = None,
) -> None:
    """Validate and store catalogue rows; prints the report (exit 2 when every row is rejected).

    Fields: item (required), title, description, category ("A > B > C"), brand, price,
    currency, in_stock or stock, image_url, attributes. A rejected row is named by its line and
    field, never by its value.
    """
    with errors(), open_recsys(data_dir) as rs:
        report = rs.catalogue.import_file(path)
    console.print_json(json.dumps(report))
    if report["accepted"] == 0:
        err.print(f"[bold red]error:[/] no row of {path.name} was accepted")
        raise typer.Exit(2)
