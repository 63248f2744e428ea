"""The service secret: Supabase URL and service key, JWT secret or JWKS URL, admin token."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from fusou_infra.nag import acknowledge

# The keys the operator fills in (fusou_compaction.wiring.ServiceSecrets reads them).
SECRET_KEYS = ("supabase_url", "supabase_service_key", "jwt_secret", "jwks_url", "admin_token")


class Secrets(Construct):
    def __init__(self, scope: Construct, id: str, *, stage: str) -> None:
        super().__init__(scope, id)
        # Only the admin token is generated; the Supabase values are written by the operator (runbook).
        # No empty placeholders: an empty jwt_secret must never look like a configured one.
        self.secret = secretsmanager.Secret(
            self,
            "Service",
            secret_name=f"{stage}/kc-compaction/service",
            description="FUSOU compaction: supabase_url, supabase_service_key, jwt_secret or jwks_url, admin_token",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template="{}",  # noqa: S106 (an empty JSON object, not a password)
                generate_string_key="admin_token",
                exclude_punctuation=True,
                password_length=48,
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "The Supabase service key and JWT secret are issued by Supabase and rotated there; "
            "the operator updates this secret (runbook), so a rotation Lambda has nothing to rotate",
        )

    def grant_read(self, fn: lambda_.Function) -> None:
        """Every function reaches the catalog through Supabase, so each reads this one secret."""
        self.secret.grant_read(fn)
