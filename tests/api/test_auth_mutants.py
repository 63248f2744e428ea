"""logic/auth.py: what mutation testing (make mutate MODULE=logic.auth) found untested.

The auth tests check the status of each bad credential; here the reasons are pinned (they are
what the 401/503 is logged with), the admin caller's fields, the default of ``admin_only``, a
bearer header with two spaces, a key of the right type published for another algorithm, and the
claims of the dev token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from fusou_compaction.logic.auth import (
    MAX_TOKEN_CHARS,
    AuthConfig,
    AuthUnavailable,
    Caller,
    Forbidden,
    Unauthorized,
    authenticate,
    bearer_token,
    mint_dev_token,
    verify_user_token,
)

from .conftest import ADMIN_TOKEN, JWT_SECRET, Jwks, JwksServer, ec_key, public_jwk
from .test_auth import ISSUER, claims

DOWN = "the project's signing keys (JWKS) are unreachable; retry later"


def config_for(jwks_url: str | None) -> AuthConfig:
    return AuthConfig(
        jwt_secret=JWT_SECRET, jwks_url=jwks_url, issuer=ISSUER, audience="authenticated", admin_token=ADMIN_TOKEN
    )


def test_an_unreachable_jwks_says_so_on_the_failed_fetch_and_while_taken_as_down(jwks: Jwks) -> None:
    # Given a JWKS URL nothing listens on (its own, so no other test's state is shared)
    config = config_for(f"http://127.0.0.1:1/{uuid4()}/jwks.json")
    token = jwks.sign(claims(uuid4()))
    # When a token needing it is verified, twice, Then both say the keys are unreachable: the
    # failed fetch and the 10 s after it (kills each message None or changed, in both places)
    for _ in range(2):
        with pytest.raises(AuthUnavailable) as raised:
            verify_user_token(token, config)
        assert str(raised.value) == DOWN


def test_a_kid_the_jwks_does_not_have_says_no_signing_key(jwks: Jwks) -> None:
    with pytest.raises(Unauthorized, match=r"^no signing key for this token: "):
        verify_user_token(jwks.sign(claims(uuid4()), kid="nope"), config_for(jwks.url))


class P384Jwks(JwksServer):
    """A JWKS with one EC key on P-384, published for ES384 (its key type is EC, as ES256's)."""

    def __init__(self) -> None:
        self.key = ec_key(ec.SECP384R1())
        jwk = public_jwk("ES384", self.key.public_key(), kid="ec-384", alg="ES384", use="sig")
        super().__init__([jwk], path=f"/{uuid4()}/jwks.json")


@pytest.fixture
def p384() -> Iterator[P384Jwks]:
    j = P384Jwks()
    yield j
    j.server.shutdown()


def test_an_es256_token_on_a_key_published_for_es384_is_refused_as_not_its_key(p384: P384Jwks) -> None:
    # Given an ES256 header naming an EC key (the right type) published for ES384
    token = jwt.encode(claims(uuid4()), ec_key(), "ES256", headers={"kid": "ec-384"})
    # Then the algorithm check refuses it, naming the key (kills `and` for `or`, which lets the
    # type match through to the key's preparation, and the message None)
    with pytest.raises(Unauthorized) as raised:
        verify_user_token(token, config_for(p384.url))
    assert str(raised.value) == "token algorithm ES256 does not match its key 'ec-384' (EC, ES384)"


class LyingCurveJwks(JwksServer):
    """A JWKS publishing a P-384 key as ES256: its type and ``alg`` pass the first check."""

    def __init__(self) -> None:
        self.key = ec_key(ec.SECP384R1())
        jwk = public_jwk("ES384", self.key.public_key(), kid="ec-lying", alg="ES256", use="sig")
        super().__init__([jwk], path=f"/{uuid4()}/jwks.json")


def test_a_key_published_for_es256_on_another_curve_is_refused_by_the_second_line() -> None:
    # Given a JWKS whose EC key says ES256 but lies on P-384, and an ES256 token naming it (signed
    # by any P-256 key: the key is refused before any signature is checked)
    lying = LyingCurveJwks()
    try:
        token = jwt.encode(claims(uuid4()), ec_key(), "ES256", headers={"kid": "ec-lying"})
        # When it is verified, Then the key's preparation refuses it, naming algorithm and key
        # (kills the second line's message None or changed)
        with pytest.raises(Unauthorized) as raised:
            verify_user_token(token, config_for(lying.url))
        assert str(raised.value).startswith("token algorithm ES256 cannot use key 'ec-lying': "), raised.value
        assert "curve" in str(raised.value)
    finally:
        lying.server.shutdown()


def test_the_admin_caller_and_a_wrong_admin_token() -> None:
    config = config_for(None)
    # The admin token makes an admin caller named for logs as the admin token (kills via and
    # principal None or changed)
    assert authenticate({"x-admin-token": ADMIN_TOKEN}, config=config) == Caller(
        user_id=None, is_admin=True, via="admin-token", principal="admin-token"
    )
    # A wrong one says so (kills the message None or changed)
    with pytest.raises(Unauthorized, match=r"^invalid admin token$"):
        authenticate({"x-admin-token": "wrong"}, config=config)


def test_no_credentials_name_what_to_send_for_the_route() -> None:
    config = config_for(None)
    # Kills the hint None, `if admin_only and False` / `or True`, each hint changed, the message None
    with pytest.raises(Unauthorized, match=r"^missing credentials: send Authorization: Bearer <Supabase JWT>$"):
        authenticate({}, config=config)
    with pytest.raises(Unauthorized, match=r"^missing credentials: send X-Admin-Token header$"):
        authenticate({}, config=config, admin_only=True)


def test_a_user_token_is_accepted_on_a_route_that_does_not_say_admin_only() -> None:
    # Kills `admin_only: bool = True` as the default
    user = uuid4()
    caller = authenticate(
        {"authorization": f"Bearer {mint_dev_token(user, JWT_SECRET, ISSUER)}"}, config=config_for(None)
    )
    assert (caller.user_id, caller.is_admin, caller.via, caller.principal) == (user, False, "jwt", str(user))


def test_a_bearer_header_with_two_spaces_still_names_its_token() -> None:
    # Kills rpartition, which would take "Bearer " (with its space) for the scheme
    assert bearer_token("Bearer  abc.def.ghi") == "abc.def.ghi"


def test_the_dev_token_is_supabase_shaped_and_lasts_an_hour() -> None:
    user = uuid4()
    token = mint_dev_token(user, JWT_SECRET, ISSUER)
    header = jwt.get_unverified_header(token)
    body = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated", issuer=ISSUER)
    # Kills ttl 3601, the role and iat claims renamed or changed
    assert header["alg"] == "HS256"
    assert body["role"] == "authenticated" and body["exp"] - body["iat"] == 3600
    assert abs(body["iat"] - time.time()) < 60 and body["sub"] == str(user)


def test_a_user_token_on_an_admin_route_says_the_route_is_for_operators() -> None:
    # Kills the Forbidden message None or changed
    token = mint_dev_token(uuid4(), JWT_SECRET, ISSUER)
    with pytest.raises(Forbidden, match=r"^this route is for operators \(X-Admin-Token\)$"):
        authenticate({"authorization": f"Bearer {token}"}, config=config_for(None), admin_only=True)


def test_a_token_is_refused_for_its_length_only_past_the_limit_and_each_malformation_says_why() -> None:
    config = config_for(None)

    def reason(token: str) -> str:
        with pytest.raises(Unauthorized) as raised:
            verify_user_token(token, config)
        return str(raised.value)

    # A token of exactly MAX_TOKEN_CHARS is parsed (and found malformed): kills `>=` for `>`
    assert reason("a" * MAX_TOKEN_CHARS).startswith("malformed token: ")
    # One more character is refused for its length, saying so (kills the message None)
    assert reason("a" * (MAX_TOKEN_CHARS + 1)) == f"token longer than {MAX_TOKEN_CHARS} characters"
    # Not ASCII, and not a JWT, each say so (kills those messages None or changed)
    assert reason("é.b.c") == "malformed token: not ASCII"
    assert reason("not-a-jwt").startswith("malformed token: ") and reason("not-a-jwt") != "malformed token: "


def _hs256(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("token", "config", "reason"),
    [
        (
            lambda: _hs256(claims(uuid4())),
            lambda: AuthConfig(None, None, ISSUER, "authenticated", ADMIN_TOKEN),
            "HS256 tokens are not accepted here (no JWT secret configured)",
        ),
        (
            lambda: jwt.encode(claims(uuid4()), ec_key(), "ES256"),
            lambda: config_for(None),
            "ES256 tokens are not accepted here (no JWKS configured)",
        ),
        (
            lambda: jwt.encode(claims(uuid4()), JWT_SECRET, algorithm="HS384"),
            lambda: config_for(None),
            "token algorithm 'HS384' is not accepted",
        ),
        (lambda: _hs256(claims(uuid4(), exp=int(time.time()) - 3600)), lambda: config_for(None), "token expired"),
        (
            lambda: _hs256(claims(uuid4(), aud="anon")),
            lambda: config_for(None),
            "token audience is not 'authenticated'",
        ),
        (
            lambda: _hs256(claims(uuid4(), iss="https://evil.example/auth/v1")),
            lambda: config_for(None),
            f"token issuer is not {ISSUER!r}",
        ),
        (lambda: _hs256(claims("admin")), lambda: config_for(None), "token subject is not a user id"),
    ],
    ids=["hs256 without secret", "es256 without jwks", "hs384", "expired", "audience", "issuer", "subject"],
)
def test_each_refused_token_says_why(token: Any, config: Any, reason: str) -> None:
    # Kills each of verify_user_token's messages None or changed
    with pytest.raises(Unauthorized) as raised:
        verify_user_token(token(), config())
    assert str(raised.value) == reason
