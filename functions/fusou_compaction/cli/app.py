"""The `fusou-compaction` console script: one Typer app, commands in sibling modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="fusou-compaction",
    help="FUSOU compaction service: local stack, catalog migrations, engine and operator tools.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
