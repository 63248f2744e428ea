"""The data bucket (Parquet fragments, compacted files, plans, staging), its S3 Inventory reports'
bucket, and the access-log bucket of both."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from fusou_compaction.topology import INVENTORY, bucket_name
from fusou_infra import config
from fusou_infra.lambda_factory import FunctionFactory
from fusou_infra.nag import acknowledge, checkov_skip, logical_id

READ = ("s3:GetObject",)
WRITE = ("s3:PutObject", "s3:AbortMultipartUpload")
DELETE = ("s3:DeleteObject",)


class Storage(Construct):
    def __init__(self, scope: Construct, id: str, *, stage: str) -> None:
        super().__init__(scope, id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # the only encryption S3 server access logging accepts
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(config.ACCESS_LOG_EXPIRE_DAYS))
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        for check, reason in (
            ("CKV_AWS_18", "This is the access-log bucket: logging its own access would log the logs"),
            ("CKV_AWS_21", "Access logs are written once by S3 and expire after 90 days; nothing overwrites them"),
        ):
            checkov_skip(self.access_logs, check, reason)

        # S3 Inventory delivers the data bucket's daily report here (not in the data bucket: the
        # report would list itself, and the orphan sweep would find its files under no prefix of
        # ours). The scheduled function's inventory sweep reads the newest (logic/orphans.py).
        self.inventory = s3.Bucket(
            self,
            "Inventory",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="inventory/",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-inventory-reports", expiration=Duration.days(INVENTORY.expire_days))
            ],
            removal_policy=RemovalPolicy.RETAIN,  # as the other buckets; its reports expire on their own
        )
        checkov_skip(
            self.inventory,
            "CKV_AWS_21",
            "S3 writes a new report every day and the lifecycle rule expires them after two weeks; "
            "a lost report is replaced by the next one",
        )

        self.bucket = s3.Bucket(
            self,
            "Data",
            bucket_name=bucket_name(stage, Aws.ACCOUNT_ID),
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Deleted and replaced objects stay recoverable for a while (the service deletes replaced
            # files itself after its grace period; versions are the safety net under that).
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="data/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(config.ABORT_MULTIPART_DAYS),
                ),
                s3.LifecycleRule(
                    id="expire-replaced-versions",
                    noncurrent_version_expiration=Duration.days(config.NONCURRENT_EXPIRE_DAYS),
                    expired_object_delete_marker=True,
                ),
                s3.LifecycleRule(
                    id="expire-plans", prefix=config.PLANS_PREFIX, expiration=Duration.days(config.PLANS_EXPIRE_DAYS)
                ),
                s3.LifecycleRule(
                    id="expire-staging",
                    prefix=config.STAGING_PREFIX,
                    expiration=Duration.days(config.STAGING_EXPIRE_DAYS),
                ),
            ],
            # Daily, the current objects' key, size, last modified and ETag: the inventory sweep
            # reconciles the bucket with the catalog from it without listing the bucket.
            inventories=[
                s3.Inventory(
                    inventory_id=INVENTORY.id,
                    destination=s3.InventoryDestination(bucket=self.inventory, prefix=INVENTORY.prefix),
                    frequency=s3.InventoryFrequency.DAILY,
                    format=s3.InventoryFormat.CSV,  # read with the standard library (no pyarrow in the light asset)
                    include_object_versions=s3.InventoryObjectVersion.CURRENT,
                    optional_fields=list(INVENTORY.optional_fields),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,  # the data lake outlives the stack
        )

    def grant_inventory_read(self, fn: lambda_.Function) -> None:
        """Read the data bucket's inventory reports (list them, get manifests and data files)."""
        prefix = f"{INVENTORY.prefix}/"
        fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.inventory.bucket_arn]))
        fn.add_to_role_policy(
            iam.PolicyStatement(actions=list(READ), resources=[self.inventory.arn_for_objects(f"{prefix}*")])
        )
        acknowledge(
            FunctionFactory.default_policy(fn),
            f"AwsSolutions-IAM5[Resource::<{logical_id(self.inventory)}.Arn>/{prefix}*]",
            "S3 names the report files (dated folders, random data file names) under the inventory prefix; "
            "read-only, one prefix of the reports' own bucket",
        )

    def grant(self, fn: lambda_.Function, prefix: str, actions: Sequence[str]) -> None:
        """Object actions under one key prefix, plus ListBucket (without it, a missing key is 403 not 404)."""
        assert fn.role is not None
        fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn]))
        fn.add_to_role_policy(
            iam.PolicyStatement(actions=list(actions), resources=[self.bucket.arn_for_objects(f"{prefix}*")])
        )
        acknowledge(
            FunctionFactory.default_policy(fn),
            f"AwsSolutions-IAM5[Resource::<{logical_id(self.bucket)}.Arn>/{prefix}*]",
            f"Object keys under {prefix} are derived per dataset, table and run (fusou_compaction.keys); "
            "the grant is scoped to that prefix of this one bucket",
        )
