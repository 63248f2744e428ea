"""Two secrets, split by need (the JSON documents of fusou_compaction.wiring):

- ``<stage>/kc-compaction/catalog``: ``supabase_url``, ``supabase_service_key`` (bypasses row-level
  security project-wide). Every function reaches the catalog, so every function reads it.
- ``<stage>/kc-compaction/api-auth``: ``jwt_secret`` and/or ``jwks_url``, ``admin_token`` (generated),
  optional ``jwt_issuer``. Only the API function reads it: nothing that parses users' files (the
  Compact step above all) can mint a token or act as an admin.

The operator fills both (infra/README.md). A function whose secret lacks a value it needs stops at
cold start naming it.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, SecretValue
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from fusou_infra.nag import acknowledge

# The keys the operator fills in (fusou_compaction.wiring.CatalogSecret / AuthSecret read them).
CATALOG_SECRET_KEYS = ("supabase_url", "supabase_service_key")
AUTH_SECRET_KEYS = ("jwt_secret", "jwks_url", "admin_token", "jwt_issuer")

_ROTATION_REASON = (
    "The Supabase service key and JWT secret are issued by Supabase and rotated there; the operator "
    "updates this secret (runbook) and functions pick the new value up within 5 minutes, so a "
    "rotation Lambda has nothing to rotate"
)


class Secrets(Construct):
    def __init__(self, scope: Construct, id: str, *, stage: str) -> None:
        super().__init__(scope, id)
        # An empty JSON object until the operator writes the Supabase values: no placeholder can
        # look like a configured value, and the functions refuse to start naming what is missing.
        self.catalog = secretsmanager.Secret(
            self,
            "Catalog",
            secret_name=f"{stage}/kc-compaction/catalog",
            description="FUSOU compaction, every function: supabase_url, supabase_service_key",
            secret_string_value=SecretValue.unsafe_plain_text("{}"),  # nothing secret in {}
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Only the admin token is generated; the JWT secret (or JWKS URL) is Supabase's.
        self.auth = secretsmanager.Secret(
            self,
            "ApiAuth",
            secret_name=f"{stage}/kc-compaction/api-auth",
            description="FUSOU compaction, API only: jwt_secret and/or jwks_url, admin_token, optional jwt_issuer",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template="{}",  # noqa: S106 (an empty JSON object, not a password)
                generate_string_key="admin_token",
                exclude_punctuation=True,
                password_length=48,
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
        for secret in (self.catalog, self.auth):
            acknowledge(secret, "AwsSolutions-SMG4", _ROTATION_REASON)

    def grant_catalog(self, fn: lambda_.Function) -> None:
        """The catalog's credentials: every function that calls the catalog."""
        self.catalog.grant_read(fn)

    def grant_auth(self, fn: lambda_.Function) -> None:
        """The API's auth material: the API function only."""
        self.auth.grant_read(fn)
