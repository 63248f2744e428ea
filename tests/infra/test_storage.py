"""The data bucket: private, encrypted, TLS only, lifecycle rules, and presigned uploads registered."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.cfn import join_strings
from tests.infra.conftest import Synthesized


def _data_bucket(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    lid = synth.logical_id(synth.stack.storage.bucket)
    return lid, synth.props(lid)


def test_bucket_name_is_per_stage_and_account(synth: Synthesized) -> None:
    _, bucket = _data_bucket(synth)
    assert join_strings(bucket["BucketName"]) == "dev-kc-compaction-<AWS::AccountId>"


def test_every_bucket_is_private_encrypted_and_tls_only(synth: Synthesized, template: Any) -> None:
    buckets = synth.of_type("AWS::S3::Bucket")
    assert len(buckets) >= 2  # data + its access logs
    for lid, res in buckets.items():
        props = res["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, lid
        [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": lid},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Principal": {"AWS": "*"},
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_data_bucket_logs_access_and_keeps_versions(synth: Synthesized) -> None:
    _, bucket = _data_bucket(synth)
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    logs_id = synth.logical_id(synth.stack.storage.access_logs)
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}


def _rules(synth: Synthesized) -> dict[str, dict[str, Any]]:
    _, bucket = _data_bucket(synth)
    return {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}


def test_incomplete_multipart_uploads_are_aborted_after_a_day(synth: Synthesized) -> None:
    rule = _rules(synth)["abort-incomplete-multipart-uploads"]
    assert rule["Status"] == "Enabled" and "Prefix" not in rule
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_plans_expire_after_a_week_and_staging_leftovers_soon(synth: Synthesized) -> None:
    rules = _rules(synth)
    assert rules["expire-plans"]["Prefix"] == "plans/" and rules["expire-plans"]["ExpirationInDays"] == 7
    assert rules["expire-staging"]["Prefix"] == "staging/" and rules["expire-staging"]["ExpirationInDays"] <= 7


def test_replaced_object_versions_expire(synth: Synthesized) -> None:
    rule = _rules(synth)["expire-replaced-versions"]
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    assert rule["ExpiredObjectDeleteMarker"] is True


def test_objects_created_under_staging_invoke_the_register_function(synth: Synthesized) -> None:
    bucket_id, _ = _data_bucket(synth)
    register_id = synth.logical_id(synth.stack.api.register)
    [notifications] = [r["Properties"] for r in synth.of_type("Custom::S3BucketNotifications").values()]
    assert notifications["BucketName"] == {"Ref": bucket_id}
    [config] = notifications["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["LambdaFunctionArn"] == {"Fn::GetAtt": [register_id, "Arn"]}
    # Uploads only: the API's upload tickets beside them (.ticket.json) must never trigger a registration
    rules = {r["Name"]: r["Value"] for r in config["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "staging/", "suffix": ".parquet"}
    assert synth.function("register")["Handler"] == "fusou_compaction.handlers.register.handler"
