"""Who is calling: Supabase JWTs for dataset owners, an admin token or IAM for operators.

- User tokens are Supabase's: HS256 signed with the project's JWT secret, or RS256/ES256 signed
  with a key from the project's JWKS (fetched once, cached). The algorithm list is fixed per key
  type, so a token can never pick its own verification (no ``none``, no HS256-with-a-public-key).
  ``exp``, ``aud`` and ``iss`` are required and checked; ``sub`` must be the user's UUID.
- Admins send ``X-Admin-Token`` (compared in constant time), or call through an API Gateway
  method with IAM authorization: API Gateway alone fills ``requestContext.identity.userArn``
  after it verified the SigV4 signature, so a client cannot forge it.
- 401 means "no or bad credential" (missing, garbage, expired, forged, wrong audience or issuer,
  wrong admin token); 403 means "a good credential, but not allowed" (another user's dataset, a
  user token on an admin route).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from uuid import UUID

import jwt

HMAC_ALGORITHMS = ("HS256",)
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
ADMIN_HEADER = "x-admin-token"
CLOCK_SKEW_SECONDS = 30
JWKS_CACHE_SECONDS = 600


class Unauthorized(Exception):
    """No credential, or one that does not verify (→ 401)."""


class Forbidden(Exception):
    """A verified caller who may not do this (→ 403)."""


@dataclass(frozen=True)
class AuthConfig:
    jwt_secret: str | None
    jwks_url: str | None
    issuer: str
    audience: str
    admin_token: str | None


@dataclass(frozen=True)
class Caller:
    user_id: UUID | None
    is_admin: bool
    via: Literal["jwt", "admin-token", "iam"]
    principal: str  # for logs: the user id, "admin-token" or the IAM ARN

    def may_access(self, owner_id: UUID) -> bool:
        return self.is_admin or self.user_id == owner_id


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    # One client per container: it caches the key set and refetches only for an unknown kid.
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS, timeout=5)


def verify_user_token(token: str, config: AuthConfig) -> UUID:
    """The Supabase user id (``sub``) of a valid token; raises Unauthorized otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"malformed token: {exc}") from exc
    alg = header.get("alg")
    key: Any
    if alg in HMAC_ALGORITHMS:
        if not config.jwt_secret:
            raise Unauthorized("HS256 tokens are not accepted here (no JWT secret configured)")
        key, algorithms = config.jwt_secret, list(HMAC_ALGORITHMS)
    elif alg in ASYMMETRIC_ALGORITHMS:
        if not config.jwks_url:
            raise Unauthorized(f"{alg} tokens are not accepted here (no JWKS configured)")
        try:
            key, algorithms = _jwks_client(config.jwks_url).get_signing_key_from_jwt(token).key, [alg]
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"no signing key for this token: {exc}") from exc
    else:
        raise Unauthorized(f"token algorithm {alg!r} is not accepted")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=config.audience,
            issuer=config.issuer,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthorized(f"token audience is not {config.audience!r}") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized(f"token issuer is not {config.issuer!r}") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    try:
        return UUID(str(claims["sub"]))
    except ValueError as exc:
        raise Unauthorized("token subject is not a user id") from exc


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


def admin_token_matches(given: str, expected: str | None) -> bool:
    # Constant time, and never true when no token is configured.
    return bool(expected) and hmac.compare_digest(given.encode(), str(expected).encode())


def authenticate(
    headers: Mapping[str, str], *, iam_user_arn: str | None, config: AuthConfig, admin_only: bool = False
) -> Caller:
    """The caller of one request; ``headers`` must be case-insensitive (or lower-cased)."""
    if iam_user_arn:
        return Caller(user_id=None, is_admin=True, via="iam", principal=iam_user_arn)
    admin = headers.get(ADMIN_HEADER)
    if admin is not None:
        if not admin_token_matches(admin, config.admin_token):
            raise Unauthorized("invalid admin token")
        return Caller(user_id=None, is_admin=True, via="admin-token", principal="admin-token")
    token = bearer_token(headers.get("authorization"))
    if token is None:
        hint = "X-Admin-Token header" if admin_only else "Authorization: Bearer <Supabase JWT>"
        raise Unauthorized(f"missing credentials: send {hint}")
    user_id = verify_user_token(token, config)
    if admin_only:
        raise Forbidden("this route is for operators (X-Admin-Token or IAM)")
    return Caller(user_id=user_id, is_admin=False, via="jwt", principal=str(user_id))


def mint_dev_token(
    user_id: UUID | str, secret: str, issuer: str, audience: str = "authenticated", ttl: int = 3600
) -> str:
    """A Supabase-shaped HS256 token for the local stack (``fusou-compaction token``)."""
    now = int(time.time())
    claims = {
        "sub": str(UUID(str(user_id))),
        "aud": audience,
        "iss": issuer,
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
