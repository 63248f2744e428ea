"""Deployed numbers of infra/README.md not pinned elsewhere: each asserted equal in the synthesized
template (a configuration value has no inside or outside), and the Compact memory range at its edges
in the function that refuses what Lambda or the engine cannot run with."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fusou_infra.app import _compact_memory_mb
from tests.infra.cfn import join_strings

from .conftest import Synthesized

DAY = 24 * 3600


def test_staged_uploads_expire_after_2_days(synth: Synthesized) -> None:
    # Given the data bucket's lifecycle, Then leftovers in staging/ expire 2 days after upload
    [bucket] = [
        r["Properties"]
        for r in synth.of_type("AWS::S3::Bucket").values()
        if any(
            rule.get("Id") == "expire-staging"
            for rule in r["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
        )
    ]
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-staging"]["Prefix"] == "staging/"
    assert rules["expire-staging"]["ExpirationInDays"] == 2


def test_failed_registrations_are_retried_every_30_minutes_for_a_day(synth: Synthesized) -> None:
    # Given the register function's retry queue, Then a message is received every 30 min, 48 times
    queue = synth.props(synth.logical_id(synth.stack.queues.register_retry))
    assert queue["VisibilityTimeout"] == 1800
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 48
    assert queue["VisibilityTimeout"] * queue["RedrivePolicy"]["maxReceiveCount"] == DAY


def _alarm(synth: Synthesized, name: str) -> dict[str, Any]:
    alarms: list[dict[str, Any]] = [
        r["Properties"]
        for r in synth.of_type("AWS::CloudWatch::Alarm").values()
        if r["Properties"]["AlarmName"] == name
    ]
    [alarm] = alarms
    return alarm


def test_the_queue_age_alarm_fires_at_15_minutes(synth: Synthesized) -> None:
    age = _alarm(synth, "dev-kc-compaction-queue-age")
    assert age["Threshold"] == 900
    assert age["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_every_function_log_group_keeps_30_days(synth: Synthesized) -> None:
    groups = [
        r["Properties"]
        for r in synth.of_type("AWS::Logs::LogGroup").values()
        if "/aws/lambda/" in str(r["Properties"].get("LogGroupName"))
    ]
    assert groups and {g["RetentionInDays"] for g in groups} == {30}


def test_inventory_reports_expire_after_14_days(synth: Synthesized) -> None:
    [rule] = synth.props(synth.logical_id(synth.stack.storage.inventory))["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 14


def test_the_scheduled_function_has_lambdas_longest_timeout(synth: Synthesized) -> None:
    assert synth.function("scheduled")["Timeout"] == 900


@pytest.mark.parametrize(("value", "accepted"), [(1023, False), (1024, True), (10240, True), (10241, False)])
def test_compact_memory_is_accepted_from_1024_to_10240_mb(value: int, accepted: bool) -> None:
    # Given a compactMemoryMb context value at either edge of the range, or one past it
    if accepted:
        # Then the edge is given to the Compact function
        assert _compact_memory_mb(str(value)) == value
    else:
        # Then one past it is refused, naming the range
        with pytest.raises(ValueError, match=r"from 1024 to 10240"):
            _compact_memory_mb(str(value))


def test_compact_runs_8_bins_at_once_by_default(synth: Synthesized) -> None:
    machine = synth.props(synth.logical_id(synth.stack.pipeline.state_machine))
    asl = json.loads(join_strings(machine["DefinitionString"]))
    assert asl["States"]["Compact"]["MaxConcurrency"] == 8


def test_functions_other_than_compact_and_register_get_256_to_1024_mb(synth: Synthesized) -> None:
    memory = {
        r["Properties"]["FunctionName"].removeprefix("dev-kc-compaction-"): r["Properties"]["MemorySize"]
        for r in synth.of_type("AWS::Lambda::Function").values()
        if str(r["Properties"].get("FunctionName", "")).startswith("dev-kc-compaction-")
    }
    assert memory.pop("step-compact") == 1769 and memory.pop("register") == 1769
    assert memory and all(256 <= mb <= 1024 for mb in memory.values()), memory
