"""The data bucket's S3 Inventory: a daily CSV report in a bucket of its own, which only S3 may
write and the scheduled function reads for its inventory sweep."""

from __future__ import annotations

import json
from typing import Any

from fusou_compaction.topology import INVENTORY
from tests.infra.conftest import Synthesized


def _statements_of(synth: Synthesized, function: str) -> list[dict[str, Any]]:
    role_id = synth.function(function)["Role"]["Fn::GetAtt"][0]
    return [
        s
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


def test_the_data_bucket_reports_its_current_objects_daily_as_csv_to_the_inventory_bucket(synth: Synthesized) -> None:
    data = synth.props(synth.logical_id(synth.stack.storage.bucket))
    [inventory] = data["InventoryConfigurations"]
    assert inventory["Id"] == INVENTORY.id and inventory["Enabled"] is True
    assert inventory["ScheduleFrequency"] == "Daily" and inventory["IncludedObjectVersions"] == "Current"
    # the columns the sweep reads: the key (always there), its age and size
    assert {"Size", "LastModifiedDate"} <= set(inventory["OptionalFields"])
    assert "Prefix" not in inventory  # the whole bucket: orphans anywhere are found
    destination = inventory["Destination"]
    assert destination["Format"] == "CSV" and destination["Prefix"] == INVENTORY.prefix
    assert destination["BucketArn"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.storage.inventory), "Arn"]}


def test_reports_expire_and_only_s3_writes_them_for_the_data_bucket(synth: Synthesized) -> None:
    lid = synth.logical_id(synth.stack.storage.inventory)
    bucket = synth.props(lid)
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == INVENTORY.expire_days >= 7  # a week-long sweep still finds its report
    [policy] = [
        p["Properties"]
        for p in synth.of_type("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": lid}
    ]
    allows = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allows, "S3 Inventory needs the destination's bucket policy to let it write"
    for s in allows:
        assert s["Principal"] == {"Service": "s3.amazonaws.com"} and _actions(s) == ["s3:PutObject"]
        # only for reports about our data bucket
        assert json.dumps(synth.logical_id(synth.stack.storage.bucket)) in json.dumps(s["Condition"])


def test_the_scheduled_function_reads_the_reports_and_may_head_and_delete_under_datasets_only(
    synth: Synthesized,
) -> None:
    fn = synth.function("scheduled")
    inventory_id = synth.logical_id(synth.stack.storage.inventory)
    assert fn["Environment"]["Variables"]["FUSOU_INVENTORY_BUCKET"] == {"Ref": inventory_id}
    statements = _statements_of(synth, "scheduled")
    reads = [s for s in statements if inventory_id in json.dumps(s["Resource"])]
    assert {a for s in reads for a in _actions(s)} == {"s3:ListBucket", "s3:GetObject"}
    deletes = [s for s in statements if "s3:DeleteObject" in _actions(s)]
    assert deletes and all(json.dumps(s["Resource"]).count("/datasets/*") == 1 for s in deletes)
    assert all("s3:GetObject" in _actions(s) for s in deletes)  # the HEAD before an inventory's orphan goes
