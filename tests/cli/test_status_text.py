"""`status` and `dlq-status` without --json: a person sees quarantined fragments (issue 18, item 1)."""

from __future__ import annotations

from fusou_compaction.cli import ops
from fusou_compaction.cli.common import out

STATUS = {
    "datasetId": "3f1c2a5e-8b7d-4c1e-9f0a-2b6d8e4c7a91",
    "compactionNeeded": False,
    "tables": {"battle": {"fragments": 0, "compacted": 1, "rows": 600, "bytes": 9000, "files": []}},
    "runs": [],
    "quarantined": [
        {
            "fragmentId": "6d0b5a9e-2f4c-4b8e-9c1a-7e3f5d2b8a40",
            "table": "battle",
            "key": "datasets/x/battle/fragments/y.parquet",
            "reason": "CorruptInputError: row group 0 says it holds 10 rows but column 'battle_id' holds 100 values",
            "step": "Compact",
            "at": "2026-12-05T09:00:00+00:00",
            "runId": "0b1f8f5e-6c1e-4d5e-9a36-2f4c6a9b7e11",
            "rows": 10,
        }
    ],
}


def test_status_lists_the_quarantined_fragments_with_their_reason() -> None:
    with out.capture() as captured:
        ops._render_status(STATUS)
    text = captured.get()
    assert "quarantined" in text and "6d0b5a9e-2f4c-4b8e-9c1a-7e3f5d2b8a40" in text and "CorruptInputError" in text


def test_status_without_quarantined_fragments_shows_no_such_table() -> None:
    with out.capture() as captured:
        ops._render_status({**STATUS, "quarantined": []})
    assert "quarantined" not in captured.get()
