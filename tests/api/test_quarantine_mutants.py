"""logic/quarantine.py: what mutation testing (make mutate MODULE=logic.quarantine) found untested.

An operator's re-admit or delete of a quarantined fragment is logged, one JSON line naming the
action, the fragment, its dataset and whether anything changed: the audit trail of a hand on the
catalog. The route tests checked the response only.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from .conftest import Api, call, log_records
from .test_routes import _quarantined, quarantine_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def quarantine_records(logs: io.StringIO) -> list[dict[str, Any]]:
    return [r for r in log_records(logs) if str(r.get("message", "")).startswith("quarantined fragment")]


@pytest.mark.parametrize("action", ["readmit", "delete"])
def test_an_operators_action_on_a_quarantined_fragment_is_logged_with_its_ids(
    api: Api, logs: io.StringIO, action: str
) -> None:
    # Given a quarantined fragment
    dataset, fragment, _ = _quarantined(api)
    # When an admin re-admits (or deletes) it, and then does it again
    assert call(quarantine_event(api, fragment, action))["statusCode"] == 200
    assert call(quarantine_event(api, fragment, action))["statusCode"] == 200
    # Then each is one log line naming the action, the fragment, its dataset and whether it changed
    # anything (kills the mutants of the message, of `extra` and of each of its keys and values)
    records = quarantine_records(logs)
    assert [(r["message"], r.get("fragmentId"), r.get("datasetId"), r.get("changed")) for r in records] == [
        (f"quarantined fragment: {action}", str(fragment), str(dataset), True),
        (f"quarantined fragment: {action}", str(fragment), str(dataset), False),
    ]
