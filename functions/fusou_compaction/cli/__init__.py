"""Console entry point. Each command module registers itself on ``app`` when imported."""

from __future__ import annotations

from fusou_compaction.cli import (  # noqa: F401  (registers commands)
    compact,
    db,
    demo,
    dev,
    ops,
)
from fusou_compaction.cli.app import app


def main() -> None:
    app()
