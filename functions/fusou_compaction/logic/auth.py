"""Who is calling: Supabase JWTs for dataset owners, an admin token for operators.

- User tokens are Supabase's: HS256 signed with the project's JWT secret, or RS256/ES256 signed
  with a key from the project's JWKS (fetched once, cached). The algorithm list is fixed per key
  type, so a token can never pick its own verification (no ``none``, no HS256-with-a-public-key).
  ``exp``, ``aud`` and ``iss`` are required and checked; ``sub`` must be the user's UUID.
- Admins send ``X-Admin-Token`` (compared in constant time). It lives in the API's auth secret,
  so reading it already takes IAM permissions on that secret. There is no IAM-signed admin path:
  the gateway's methods have no IAM authorization, and treating any IAM caller as an admin would
  make every principal of the account one.
- 503 means the project's JWKS cannot be fetched: no asymmetric token can be verified, good or
  bad, so the caller is told to retry rather than that its token is wrong.
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
# The JWK key type (``kty``) each asymmetric algorithm verifies with: a token naming RS256 must
# name an RSA key of the JWKS, one naming ES256 an EC key (P-256), never the other way round.
KEY_TYPE_OF_ALGORITHM = {"RS256": "RSA", "ES256": "EC"}
ASYMMETRIC_ALGORITHMS = tuple(KEY_TYPE_OF_ALGORITHM)
# Supabase's access tokens are 1-2 KB; API Gateway itself refuses headers over 10 KB. Anything
# longer is refused before it is parsed, so a huge header costs a length check, nothing more.
MAX_TOKEN_CHARS = 16 * 1024
ADMIN_HEADER = "x-admin-token"
CLOCK_SKEW_SECONDS = 30
JWKS_CACHE_SECONDS = 600
# After a failed JWKS fetch, asymmetric tokens get 503 at once for this long instead of each
# request waiting on the fetch's timeout again (a Supabase outage must not hold every API
# invocation for 5 s). An unknown kid with the JWKS up costs at most one refetch per PyJWT's
# cooldown (30 s), so a flood of forged kids is no flood of fetches.
JWKS_DOWN_SECONDS = 10
JWKS_FETCH_TIMEOUT_SECONDS = 5


class Unauthorized(Exception):
    """No credential, or one that does not verify (→ 401)."""


class Forbidden(Exception):
    """A verified caller who may not do this (→ 403)."""


class AuthUnavailable(Exception):
    """The keys that would verify the token cannot be fetched now (→ 503, retry later)."""


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
    via: Literal["jwt", "admin-token"]
    principal: str  # for logs: the user id or "admin-token"

    def may_access(self, owner_id: UUID) -> bool:
        return self.is_admin or self.user_id == owner_id


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    # One client per container: it caches the key set and refetches only for an unknown kid.
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS, timeout=JWKS_FETCH_TIMEOUT_SECONDS)


# JWKS URL -> monotonic time until which it is taken as down (see JWKS_DOWN_SECONDS).
_jwks_down_until: dict[str, float] = {}


def _jwks_key(token: str, alg: str, jwks_url: str) -> Any:
    """The JWKS public key the token names, ready for ``alg``; Unauthorized unless it fits ``alg``.

    The token picks the key (``kid``) and names the algorithm (``alg``): both are the caller's
    word. The key's type decides, so an ES256 header on an RSA key (or RS256 on an EC key) is
    refused here instead of reaching the verifier with a key it cannot use.
    """
    if _jwks_down_until.get(jwks_url, 0.0) > time.monotonic():
        raise AuthUnavailable("the project's signing keys (JWKS) are unreachable; retry later")
    try:
        jwk = _jwks_client(jwks_url).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        _jwks_down_until[jwks_url] = time.monotonic() + JWKS_DOWN_SECONDS
        raise AuthUnavailable("the project's signing keys (JWKS) are unreachable; retry later") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"no signing key for this token: {exc}") from exc
    # ``algorithm_name`` is the JWK's own ``alg``, or the one its kty/crv implies (EC P-384 is
    # ES384): a key published for one algorithm never verifies another.
    if jwk.key_type != KEY_TYPE_OF_ALGORITHM[alg] or jwk.algorithm_name != alg:
        raise Unauthorized(
            f"token algorithm {alg} does not match its key {jwk.key_id!r} ({jwk.key_type}, {jwk.algorithm_name})"
        )
    try:
        # PyJWT's prepare_key raises TypeError ("Expecting a PEM-formatted key.") for a key
        # object of another type, InvalidKeyError for an EC key on another curve, and ValueError
        # (from cryptography) for bytes, such as an oct key, that are no PEM. The check above keeps
        # them out; this is the second line. Done here, so only the key's preparation is caught,
        # never a TypeError or ValueError from anywhere else in decode().
        return jwt.get_algorithm_by_name(alg).prepare_key(jwk.key)
    except (TypeError, ValueError, jwt.InvalidKeyError) as exc:
        raise Unauthorized(f"token algorithm {alg} cannot use key {jwk.key_id!r}: {exc}") from exc


def _unverified_header(token: str) -> dict[str, Any]:
    """The token's header, not trusted yet; Unauthorized for anything that is not a compact JWT."""
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized(f"token longer than {MAX_TOKEN_CHARS} characters")
    if not token.isascii():
        # A compact JWT is base64url and dots; PyJWT would fail to UTF-8-encode a lone surrogate.
        raise Unauthorized("malformed token: not ASCII")
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"malformed token: {exc}") from exc


def verify_user_token(token: str, config: AuthConfig) -> UUID:
    """The Supabase user id (``sub``) of a valid token; raises Unauthorized otherwise."""
    alg = _unverified_header(token).get("alg")
    key: Any
    if alg in HMAC_ALGORITHMS:
        if not config.jwt_secret:
            raise Unauthorized("HS256 tokens are not accepted here (no JWT secret configured)")
        key, algorithms = config.jwt_secret, list(HMAC_ALGORITHMS)
    elif alg in ASYMMETRIC_ALGORITHMS:
        if not config.jwks_url:
            raise Unauthorized(f"{alg} tokens are not accepted here (no JWKS configured)")
        key, algorithms = _jwks_key(token, alg, config.jwks_url), [alg]
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
    # Constant time, and never true when no token is configured. Header values that cannot be
    # encoded (lone surrogates) are simply not the token, rather than an encoding error (a 500).
    if not given.isascii():
        return False
    return bool(expected) and hmac.compare_digest(given.encode(), str(expected).encode())


def authenticate(headers: Mapping[str, str], *, config: AuthConfig, admin_only: bool = False) -> Caller:
    """The caller of one request; ``headers`` must be case-insensitive (or lower-cased)."""
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
        raise Forbidden("this route is for operators (X-Admin-Token)")
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
