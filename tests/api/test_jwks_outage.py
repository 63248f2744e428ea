"""The project's JWKS down or flooded with unknown kids: 503 fast while it is down, one refetch per
cooldown for forged kids, and never a 5 s wait per request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from types import SimpleNamespace
from uuid import uuid4

import jwt
import pytest

from fusou_compaction.logic import auth
from fusou_compaction.logic.auth import JWKS_DOWN_SECONDS, AuthConfig, AuthUnavailable, Unauthorized, verify_user_token

from .conftest import ADMIN_TOKEN, JWT_SECRET, SUPABASE_ISSUER, Api, call, error_of, invoke_event
from .test_auth import Jwks, claims

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


class FlakyJwks(Jwks):
    """The loopback JWKS of test_auth, switchable to answering 503 (Supabase's auth down)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.fetches = 0
        good = self.server.RequestHandlerClass
        outer = self

        class Handler(good):  # type: ignore[misc,valid-type]
            def do_GET(self) -> None:
                outer.fetches += 1
                if outer.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

        self.server.shutdown()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth/v1/.well-known/jwks.json"


@pytest.fixture
def jwks() -> Iterator[FlakyJwks]:
    j = FlakyJwks()
    yield j
    j.server.shutdown()


@pytest.fixture(autouse=True)
def _fresh_jwks_state() -> Iterator[None]:
    # Each test starts with no cached key set and no URL taken as down.
    auth._jwks_client.cache_clear()
    auth._jwks_down_until.clear()
    yield
    auth._jwks_client.cache_clear()
    auth._jwks_down_until.clear()


def _config(url: str) -> AuthConfig:
    return AuthConfig(
        jwt_secret=JWT_SECRET, jwks_url=url, issuer=SUPABASE_ISSUER, audience="authenticated", admin_token=ADMIN_TOKEN
    )


def test_jwks_down_gives_unavailable_and_is_not_asked_again_within_the_window(jwks: FlakyJwks) -> None:
    # Given the project's JWKS answering 503
    jwks.down = True
    token = jwks.sign(claims(uuid4()))
    # When a correctly signed RS256 token is verified, twice
    with pytest.raises(AuthUnavailable):
        verify_user_token(token, _config(jwks.url))
    assert jwks.fetches == 1
    with pytest.raises(AuthUnavailable):
        verify_user_token(token, _config(jwks.url))
    # Then the second answer came without a fetch: the URL is taken as down for JWKS_DOWN_SECONDS
    assert jwks.fetches == 1
    # And once the window has passed and the JWKS is back, the same token verifies
    jwks.down = False
    auth._jwks_down_until[jwks.url] = time.monotonic() - 0.001
    assert verify_user_token(token, _config(jwks.url)) is not None
    assert jwks.fetches == 2


def test_the_down_window_is_jwks_down_seconds(jwks: FlakyJwks) -> None:
    jwks.down = True
    before = time.monotonic()
    with pytest.raises(AuthUnavailable):
        verify_user_token(jwks.sign(claims(uuid4())), _config(jwks.url))
    until = auth._jwks_down_until[jwks.url]
    assert before + JWKS_DOWN_SECONDS <= until <= time.monotonic() + JWKS_DOWN_SECONDS
    assert JWKS_DOWN_SECONDS == 10  # documented in logic/auth.py; short enough to notice recovery


def test_the_down_window_ends_exactly_jwks_down_seconds_after_the_failed_fetch(
    jwks: FlakyJwks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given auth's monotonic clock held by the test (only auth's view of the clock: the JWKS
    # server and PyJWT keep the real one), at 1,000 s when the JWKS answers 503
    clock = [1_000.0]
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    token = jwks.sign(claims(uuid4()))
    jwks.down = True
    with pytest.raises(AuthUnavailable):
        verify_user_token(token, _config(jwks.url))
    assert auth._jwks_down_until[jwks.url] == 1_000.0 + JWKS_DOWN_SECONDS
    jwks.down = False
    # When it is asked again just inside the window, Then it is still taken as down, unasked
    clock[0] = 1_000.0 + JWKS_DOWN_SECONDS - 0.5
    with pytest.raises(AuthUnavailable):
        verify_user_token(token, _config(jwks.url))
    assert jwks.fetches == 1
    # And at the window's last instant it is asked again (the window is [fail, fail + 10 s)), and
    # the token verifies
    clock[0] = 1_000.0 + JWKS_DOWN_SECONDS
    assert verify_user_token(token, _config(jwks.url)) is not None
    assert jwks.fetches == 2


def test_hs256_tokens_still_verify_while_the_jwks_is_down(jwks: FlakyJwks) -> None:
    jwks.down = True
    with pytest.raises(AuthUnavailable):
        verify_user_token(jwks.sign(claims(uuid4())), _config(jwks.url))
    user = uuid4()
    assert verify_user_token(jwt.encode(claims(user), JWT_SECRET, algorithm="HS256"), _config(jwks.url)) == user


def test_a_flood_of_unknown_kids_refetches_at_most_once(jwks: FlakyJwks) -> None:
    # Given a key set fetched once by a good token
    verify_user_token(jwks.sign(claims(uuid4())), _config(jwks.url))
    assert jwks.fetches == 1
    # When 50 tokens name kids the project never published
    for _ in range(50):
        with pytest.raises(Unauthorized):
            verify_user_token(jwks.sign(claims(uuid4()), kid=f"forged-{uuid4()}"), _config(jwks.url))
    # Then they are refused with at most one refetch (PyJWT's refresh cooldown), not 50
    assert jwks.fetches <= 2


def test_the_api_answers_503_unavailable_while_the_jwks_is_down(api: Api, jwks: FlakyJwks) -> None:
    # Given the deployed way of verifying asymmetric tokens, and the JWKS down
    api.with_settings(jwks_url=jwks.url, jwt_issuer=SUPABASE_ISSUER)
    jwks.down = True
    token = jwks.sign(claims(uuid4()))
    # When an owner route is called with a correctly signed RS256 token
    event = invoke_event("GET", f"/api/compaction/datasets/{uuid4()}", {"Authorization": f"Bearer {token}"})
    started = time.monotonic()
    first = call(event)
    second = call(event)
    # Then both are 503 "unavailable", telling the client to retry, not that its token is bad
    for response in (first, second):
        status, code, message = error_of(response)
        assert (status, code) == (503, "unavailable")
        assert "retry" in message and jwks.url not in json.dumps(response)
    # And neither waited on the fetch's timeout (the second one did not fetch at all)
    assert time.monotonic() - started < auth.JWKS_FETCH_TIMEOUT_SECONDS
    assert jwks.fetches == 1
