"""A JWT authenticator: the worked example of ``RUNSTREAM_AUTH``.

``RUNSTREAM_AUTH=runstream.api.jwt_auth:JwtAuthenticator`` accepts
``Authorization: Bearer <JWT>`` issued by the host application's own login:
HS256 under a shared secret, or RS256 under the issuer's public key
(``RUNSTREAM_JWT_ALGORITHM``, ``RUNSTREAM_JWT_KEY``). A token must carry
``exp`` (not past), ``aud`` (``RUNSTREAM_JWT_AUDIENCE``), ``sub`` (the user id)
and ``tenant``; ``iss`` is checked when ``RUNSTREAM_JWT_ISSUER`` is set. Any
other token is a 401 that says what is wrong with it.

PyJWT does the cryptography and the registered claims; this module only maps
its verdicts to Runstream's errors and the claims to a principal.
"""

from __future__ import annotations

from typing import Any

# The ``jwt`` extra: pip install 'runstream[jwt]'.
import jwt
from starlette.requests import Request

from runstream.api.auth import Unauthorized, bearer_credential
from runstream.api.tenancy import MAX_ID_CHARS, Principal
from runstream.core.settings import Settings, SettingsError

# HS256 keys shorter than this are guessable offline from one token (RFC 7518 §3.2).
MIN_HS256_KEY_BYTES = 32
TENANT_CLAIM = "tenant"
USER_CLAIM = "sub"


def _claim_id(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or "\x00" in value:
        raise Unauthorized("invalid_token", f"the token has no usable '{name}' claim (a non-empty string)")
    return value


class JwtAuthenticator:
    def __init__(self, settings: Settings):
        if settings.jwt_key is None:
            raise SettingsError("RUNSTREAM_JWT_KEY must be set: the HS256 secret, or the RS256 public key (PEM)")
        if not settings.jwt_audience:
            # Without an audience, a token the same login issued for another service would do.
            raise SettingsError("RUNSTREAM_JWT_AUDIENCE must be set: the 'aud' this API's tokens carry")
        key = settings.jwt_key.get_secret_value()
        if settings.jwt_algorithm == "HS256" and len(key.encode()) < MIN_HS256_KEY_BYTES:
            raise SettingsError(f"RUNSTREAM_JWT_KEY must be at least {MIN_HS256_KEY_BYTES} bytes for HS256")
        try:
            # Parsed once, here: a malformed PEM stops the start, not every request.
            self.key = jwt.get_algorithm_by_name(settings.jwt_algorithm).prepare_key(key)
        except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
            raise SettingsError(
                f"RUNSTREAM_JWT_KEY is not a valid {settings.jwt_algorithm} key: {type(exc).__name__}"
            ) from None
        self.algorithm = settings.jwt_algorithm
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway_s = settings.jwt_leeway_s

    async def __call__(self, request: Request) -> Principal:
        token = bearer_credential(request.headers, invalid_code="invalid_token", credential_name="token")
        if token is None:
            raise Unauthorized("unauthorized", "this route needs 'Authorization: Bearer <token>'")
        claims = self._claims(token)
        return Principal(_claim_id(claims, TENANT_CLAIM), _claim_id(claims, USER_CLAIM))

    def _claims(self, token: str) -> dict[str, Any]:
        required = ["exp", "aud", USER_CLAIM] + (["iss"] if self.issuer else [])
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                # One algorithm, the configured one: a token cannot choose how it is checked.
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token_expired", "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("invalid_token", "the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("invalid_token", "the token is not from the expected issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized("invalid_token", f"the token has no '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("invalid_token", "the token's signature is not valid") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("invalid_token", "the token is not a valid JWT for this API") from None
        return claims
