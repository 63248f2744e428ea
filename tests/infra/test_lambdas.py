"""Every function gets the factory's defaults, its own least-privilege role, and valid settings."""

from __future__ import annotations

from typing import Any

import pytest

from fusou_compaction.settings import Settings
from tests.infra.conftest import Synthesized

FUNCTION_KEYS = {
    "api",
    "register",
    "consumer",
    "dlq",
    "scheduled",
    "step-validate",
    "step-get-metadata",
    "step-compact",
    "step-update",
    "step-record-failure",
}


def _ours(synth: Synthesized) -> dict[str, dict[str, Any]]:
    """Our functions (CDK's own bucket-notifications helper is not one of them)."""
    return {
        r["Properties"]["FunctionName"].removeprefix("dev-kc-compaction-"): r["Properties"]
        for r in synth.of_type("AWS::Lambda::Function").values()
        if "FunctionName" in r["Properties"]
    }


def test_the_service_has_the_functions_of_the_design(synth: Synthesized) -> None:
    assert set(_ours(synth)) == FUNCTION_KEYS


@pytest.mark.parametrize("key", sorted(FUNCTION_KEYS))
def test_function_uses_the_factory_defaults(synth: Synthesized, key: str) -> None:
    fn = _ours(synth)[key]
    assert fn["Architectures"] == ["arm64"]
    version = tuple(int(p) for p in fn["Runtime"].removeprefix("python").split("."))
    assert fn["Runtime"].startswith("python") and version >= (3, 12)
    assert fn["TracingConfig"] == {"Mode": "Active"}
    assert fn["LoggingConfig"]["LogFormat"] == "JSON"
    log_group = synth.props(fn["LoggingConfig"]["LogGroup"]["Ref"])
    assert log_group["LogGroupName"] == f"/aws/lambda/dev-kc-compaction-{key}"
    assert log_group["RetentionInDays"] > 0


def test_every_function_has_a_role_of_its_own(synth: Synthesized) -> None:
    roles = [fn["Role"]["Fn::GetAtt"][0] for fn in _ours(synth).values()]
    assert len(set(roles)) == len(roles)
    for role in roles:
        assert "ManagedPolicyArns" not in synth.props(role)  # every permission is an explicit grant


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_policy_allows_everything_on_everything(synth: Synthesized) -> None:
    for lid, res in synth.of_type("AWS::IAM::Policy").items():
        for statement in res["Properties"]["PolicyDocument"]["Statement"]:
            actions = _as_list(statement["Action"])
            resources = _as_list(statement.get("Resource", []))
            wild_action = any(a == "*" or a.endswith(":*") for a in actions)
            assert not (wild_action and "*" in resources), (lid, statement)
            if "*" in resources:  # only actions AWS offers no resource-level permission for
                assert all(
                    a.split(":")[0] in {"xray", "logs"} or a == "cloudwatch:GetMetricStatistics" for a in actions
                ), (lid, statement)


def test_only_parquet_functions_ship_pyarrow(synth: Synthesized) -> None:
    assets = synth.stack.factory.asset_of
    assert {k for k, a in assets.items() if a == "parquet"} == {
        "api",
        "register",
        "step-validate",
        "step-get-metadata",
        "step-compact",
        "step-update",
        "step-record-failure",
    }
    assert {k for k, a in assets.items() if a == "light"} == {"consumer", "dlq", "scheduled"}


@pytest.mark.parametrize("key", sorted(FUNCTION_KEYS))
def test_function_environment_is_valid_settings(synth: Synthesized, key: str) -> None:
    env = _ours(synth)[key]["Environment"]["Variables"]
    fields = {f"FUSOU_{name.upper()}" for name in Settings.model_fields}
    ours = {k for k in env if k.startswith("FUSOU_")}
    assert ours <= fields, ours - fields  # no misspelt setting is silently ignored
    # References resolve at deploy time; any string stands in for them here.
    values = {
        k.removeprefix("FUSOU_").lower(): v if isinstance(v, str) else "arn:aws:resolved"
        for k, v in env.items()
        if k in ours
    }
    settings = Settings(**values)
    assert settings.stage == "dev" and settings.catalog_transport == "supabase" and settings.catalog_secret_arn
    # Only the API is told where the auth secret is (and only it may read it: below).
    assert (settings.auth_secret_arn is not None) == (key == "api")


def _statements(synth: Synthesized, fn: dict[str, Any]) -> list[dict[str, Any]]:
    role = fn["Role"]["Fn::GetAtt"][0]
    return [
        s
        for p in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def _reads(statements: list[dict[str, Any]], secret: dict[str, str]) -> bool:
    return any(
        "secretsmanager:GetSecretValue" in _as_list(s["Action"]) and secret in _as_list(s["Resource"])
        for s in statements
    )


def test_secrets_are_split_by_need(synth: Synthesized) -> None:
    """Every function reads the catalog's credentials; only the API reads the auth secret (JWT
    secret, admin token); no role may read any other secret."""
    catalog = {"Ref": synth.logical_id(synth.stack.secrets.catalog)}
    auth = {"Ref": synth.logical_id(synth.stack.secrets.auth)}
    readers = {}
    for key, fn in _ours(synth).items():
        statements = _statements(synth, fn)
        readers[key] = (_reads(statements, catalog), _reads(statements, auth))
        for s in statements:
            actions = [a for a in _as_list(s["Action"]) if a.startswith("secretsmanager:")]
            assert not actions or all(r in (catalog, auth) for r in _as_list(s["Resource"])), (key, s)
    assert readers == {key: (True, key == "api") for key in FUNCTION_KEYS}
    assert readers["step-compact"] == (True, False)  # the function that parses users' files


def test_the_secrets_hold_no_value_but_the_generated_admin_token(synth: Synthesized) -> None:
    catalog = synth.props(synth.logical_id(synth.stack.secrets.catalog))
    auth = synth.props(synth.logical_id(synth.stack.secrets.auth))
    assert catalog["Name"] == "dev/kc-compaction/catalog" and catalog["SecretString"] == "{}"
    assert auth["Name"] == "dev/kc-compaction/api-auth"
    assert auth["GenerateSecretString"]["GenerateStringKey"] == "admin_token"
    assert auth["GenerateSecretString"]["SecretStringTemplate"] == "{}"


def test_only_the_api_may_read_metrics_for_dlq_status(synth: Synthesized) -> None:
    readers = {
        key
        for key, fn in _ours(synth).items()
        if any("cloudwatch:GetMetricStatistics" in _as_list(s["Action"]) for s in _statements(synth, fn))
    }
    assert readers == {"api"}
