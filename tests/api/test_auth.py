"""Who may call what: Supabase JWTs (HS256 secret, RS256/ES256 from JWKS), the admin token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from uuid import uuid4

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from fusou_compaction.logic.auth import (
    CLOCK_SKEW_SECONDS,
    AuthConfig,
    Forbidden,
    Unauthorized,
    authenticate,
    mint_dev_token,
    verify_user_token,
)
from fusou_compaction.settings import LOCAL_JWT_ISSUER

from .conftest import (
    ADMIN_TOKEN,
    JWT_SECRET,
    SUPABASE_ISSUER,
    SUPABASE_URL,
    Api,
    Jwks,
    call,
    error_of,
    parquet_bytes,
    rsa_key,
    sample_event,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
ISSUER = SUPABASE_ISSUER


def _b64url(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def claims(user: object, **over: Any) -> dict[str, Any]:
    return {"sub": str(user), "aud": "authenticated", "iss": ISSUER, "exp": int(time.time()) + 600, **over}


# ``jwks``: the RSA + EC key set of conftest, served for this module.


@pytest.fixture
def config(jwks: Jwks) -> AuthConfig:
    return AuthConfig(
        jwt_secret=JWT_SECRET, jwks_url=jwks.url, issuer=ISSUER, audience="authenticated", admin_token=ADMIN_TOKEN
    )


# -- verification, one rule each ---------------------------------------------------------------


def test_hs256_token_from_the_project_secret_is_accepted(config: AuthConfig) -> None:
    user = uuid4()
    assert verify_user_token(jwt.encode(claims(user), JWT_SECRET, algorithm="HS256"), config) == user


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_asymmetric_tokens_verify_against_the_jwks(config: AuthConfig, jwks: Jwks, alg: str) -> None:
    user = uuid4()
    assert verify_user_token(jwks.sign(claims(user), alg), config) == user


def test_jwks_is_fetched_once_and_cached(config: AuthConfig, jwks: Jwks) -> None:
    before = jwks.hits
    for _ in range(5):
        verify_user_token(jwks.sign(claims(uuid4())), config)
    assert jwks.hits - before <= 1


def test_dev_token_round_trips(config: AuthConfig) -> None:
    user = uuid4()
    assert verify_user_token(mint_dev_token(user, JWT_SECRET, ISSUER, "authenticated", ttl=60), config) == user


def _none_token(user: object) -> str:
    return f"{_b64url({'alg': 'none', 'typ': 'JWT'})}.{_b64url(claims(user))}."


def _hs256_with_public_key(jw: Jwks) -> str:
    # PyJWT refuses to sign HS256 with a PEM key, so the attack is crafted by hand.
    pem = jw.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_b64url({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}.{_b64url(claims(uuid4()))}"
    sig = base64.urlsafe_b64encode(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=")
    return f"{signing_input}.{sig.decode()}"


BAD_TOKENS = {
    "garbage": lambda jw: "not-a-jwt",
    "three garbage parts": lambda jw: "a.b.c",
    "expired": lambda jw: jwt.encode(claims(uuid4(), exp=int(time.time()) - 3600), JWT_SECRET, algorithm="HS256"),
    "forged (another secret)": lambda jw: jwt.encode(claims(uuid4()), "x" * 48, algorithm="HS256"),
    "alg none": lambda jw: _none_token(uuid4()),
    "wrong audience": lambda jw: jwt.encode(claims(uuid4(), aud="anon"), JWT_SECRET, algorithm="HS256"),
    "wrong issuer": lambda jw: jwt.encode(
        claims(uuid4(), iss="https://evil.example/auth/v1"), JWT_SECRET, algorithm="HS256"
    ),
    "no exp": lambda jw: jwt.encode(
        {k: v for k, v in claims(uuid4()).items() if k != "exp"}, JWT_SECRET, algorithm="HS256"
    ),
    "sub not a uuid": lambda jw: jwt.encode(claims("admin"), JWT_SECRET, algorithm="HS256"),
    "HS384": lambda jw: jwt.encode(claims(uuid4()), JWT_SECRET, algorithm="HS384"),
    "RS256 from an unknown key": lambda jw: jwt.encode(
        claims(uuid4()),
        rsa_key(),
        algorithm="RS256",
        headers={"kid": "rsa-1"},
    ),
    "unknown kid": lambda jw: jw.sign(claims(uuid4()), kid="nope"),
    "HS256 signed with the JWKS public key (alg confusion)": _hs256_with_public_key,
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_bad_tokens_are_unauthorized(config: AuthConfig, jwks: Jwks, name: str) -> None:
    with pytest.raises(Unauthorized):
        verify_user_token(BAD_TOKENS[name](jwks), config)


@pytest.mark.parametrize(
    ("expired_seconds_ago", "accepted"),
    [(-60, True), (CLOCK_SKEW_SECONDS - 10, True), (CLOCK_SKEW_SECONDS + 10, False), (3600, False)],
)
def test_exp_is_enforced_with_the_clock_skew_allowance_and_no_more(
    config: AuthConfig, expired_seconds_ago: int, accepted: bool
) -> None:
    # Given a token of the project, right in every claim but exp
    user = uuid4()
    token = jwt.encode(claims(user, exp=int(time.time()) - expired_seconds_ago), JWT_SECRET, algorithm="HS256")
    # When it is verified, Then it passes only within the allowed clock skew past its exp
    if accepted:
        assert verify_user_token(token, config) == user
    else:
        with pytest.raises(Unauthorized, match="expired"):
            verify_user_token(token, config)


def test_forged_and_expired_tokens_fail_for_that_reason_alone(config: AuthConfig) -> None:
    # The bad-token cases above carry the project's issuer and audience: each fails for its own defect
    forged = jwt.encode(claims(uuid4()), "x" * 48, algorithm="HS256")
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        verify_user_token(forged, config)
    expired = jwt.encode(claims(uuid4(), exp=int(time.time()) - 3600), JWT_SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="expired"):
        verify_user_token(expired, config)


def test_hs256_is_refused_when_no_secret_is_configured(config: AuthConfig) -> None:
    cfg = AuthConfig(
        jwt_secret=None, jwks_url=config.jwks_url, issuer=ISSUER, audience="authenticated", admin_token=None
    )
    with pytest.raises(Unauthorized):
        verify_user_token(jwt.encode(claims(uuid4()), JWT_SECRET, algorithm="HS256"), cfg)


def test_admin_token_is_never_accepted_when_none_is_configured(config: AuthConfig) -> None:
    cfg = AuthConfig(jwt_secret=JWT_SECRET, jwks_url=None, issuer=ISSUER, audience="authenticated", admin_token=None)
    with pytest.raises(Unauthorized):
        authenticate({"x-admin-token": ""}, config=cfg, admin_only=True)


def test_a_user_token_on_an_admin_route_is_forbidden(config: AuthConfig) -> None:
    token = jwt.encode(claims(uuid4()), JWT_SECRET, algorithm="HS256")
    with pytest.raises(Forbidden):
        authenticate({"authorization": f"Bearer {token}"}, config=config, admin_only=True)


def test_non_bearer_schemes_are_unauthorized(config: AuthConfig) -> None:
    with pytest.raises(Unauthorized):
        authenticate({"authorization": "Basic dXNlcjpwYXNz"}, config=config)


# -- through the API -------------------------------------------------------------------------


def _status_event(api: Api, dataset: object, headers: dict[str, str]) -> dict[str, Any]:
    event = sample_event("api_dataset_status.json", headers=headers)
    event["path"] = f"/api/compaction/datasets/{dataset}"
    return event


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer not-a-jwt"}, "garbage"),
        ({"Authorization": "Bearer"}, "empty bearer"),
        ({"Authorization": f"Bearer {_none_token(uuid4())}"}, "alg none"),
        ({"Authorization": "Bearer " + jwt.encode(claims(uuid4(), exp=1), JWT_SECRET, algorithm="HS256")}, "expired"),
        ({"Authorization": "Bearer " + jwt.encode(claims(uuid4()), "y" * 48, algorithm="HS256")}, "forged"),
        ({"X-Admin-Token": "wrong"}, "wrong admin token"),
    ],
)
def test_every_bad_credential_is_401_on_every_route(api: Api, headers: dict[str, str], why: str) -> None:
    dataset = uuid4()
    events = [
        sample_event("api_upload_raw.json", headers=headers),
        sample_event("api_upload_url.json", headers=headers),
        sample_event("api_sanitize_state.json", headers=headers, body={"datasetId": str(dataset)}),
        _status_event(api, dataset, headers),
        sample_event("api_trigger_scheduled.json", headers=headers),
        sample_event("api_dlq_status.json", headers=headers),
        sample_event("api_dlq_redrive.json", headers=headers),
        sample_event("api_quarantine.json", headers=headers),
    ]
    for event in events:
        for k in [k for k in event["headers"] if k.lower() == "x-admin-token" and "X-Admin-Token" not in headers]:
            del event["headers"][k]  # the samples carry a placeholder admin token
        status, code, message = error_of(call(event))
        assert (status, code) == (401, "unauthorized"), (why, event["path"], message)


@pytest.mark.parametrize(
    ("issuer", "status"),
    [
        (SUPABASE_ISSUER, 404),  # the project's own tokens: let in (the dataset does not exist)
        (LOCAL_JWT_ISSUER, 401),  # the local stack's dev tokens are never valid for a project
        ("https://otherprojectxxxxxxxx.supabase.co/auth/v1", 401),
        (SUPABASE_URL, 401),  # the URL without /auth/v1 is not Supabase's issuer
    ],
)
def test_the_projects_supabase_issuer_is_the_one_accepted(api: Api, issuer: str, status: int) -> None:
    # Given a token signed with the project's JWT secret, naming an issuer
    token = jwt.encode(claims(api.alice, iss=issuer), JWT_SECRET, algorithm="HS256")
    # When it asks for a dataset's status
    response = call(_status_event(api, uuid4(), {"Authorization": f"Bearer {token}"}))
    # Then only <supabase_url>/auth/v1 gets past authentication
    assert response["statusCode"] == status, response


@pytest.mark.parametrize(
    "name", ["api_trigger_scheduled.json", "api_dlq_status.json", "api_dlq_redrive.json", "api_quarantine.json"]
)
def test_admin_routes_refuse_a_valid_user_token_with_403(api: Api, name: str) -> None:
    event = sample_event(name, headers=api.bearer(api.alice))
    event["headers"].pop("X-Admin-Token", None)
    assert error_of(call(event))[:2] == (403, "forbidden")


@pytest.mark.parametrize("name", ["api_trigger_scheduled.json", "api_dlq_status.json", "api_dlq_redrive.json"])
def test_admin_routes_accept_the_admin_token(api: Api, name: str) -> None:
    response = call(sample_event(name, headers=api.admin()))
    assert response["statusCode"] in (200, 202), response


def test_an_iam_identity_in_the_event_grants_nothing(api: Api) -> None:
    # Given a request carrying an IAM identity and no admin token (there is no IAM admin path)
    event = sample_event("api_dlq_status.json")
    event["headers"].pop("X-Admin-Token", None)
    event["requestContext"]["identity"]["userArn"] = "arn:aws:iam::123456789012:role/fusou-operator"
    # When it is handled, Then it is refused like any caller without credentials
    assert error_of(call(event))[:2] == (401, "unauthorized")


def test_another_users_dataset_is_403_for_status_and_sanitize(api: Api) -> None:
    dataset = uuid4()
    api.upload(api.alice, dataset, parquet_bytes(2))
    assert error_of(call(_status_event(api, dataset, api.bearer(api.bob))))[:2] == (403, "forbidden")
    event = sample_event("api_sanitize_state.json", headers=api.bearer(api.bob), body={"datasetId": str(dataset)})
    assert error_of(call(event))[:2] == (403, "forbidden")
    assert api.drain() == []


@pytest.mark.parametrize("given", ["\udcff", "tok\ud800en", "ü" * 10, ""])
def test_an_admin_token_that_is_not_ascii_is_401_never_500(api: Api, given: str) -> None:
    event = sample_event("api_dlq_status.json", headers={"X-Admin-Token": given})
    assert error_of(call(event))[:2] == (401, "unauthorized")
