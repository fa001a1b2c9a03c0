"""Access tokens: JWTs, HS256 only, signed by the first of the configured keys and
verified by any of them (its id in the header's `kid`), carrying the user (`sub`), the
session they belong to (`sid`, auth/sessions.py) and their expiry (`exp`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Container
from dataclasses import dataclass

import jwt

from persistence.errors import Unauthenticated

_ALGORITHM = "HS256"


@dataclass(frozen=True)
class Claims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: float  # Unix time


class Tokens:
    def __init__(self, keys: tuple[tuple[str, str], ...], *, ttl_s: int,
                 disabled: Container[uuid.UUID] = frozenset(),
                 ended: Container[uuid.UUID] = frozenset()) -> None:
        self._signing = keys[0]
        self._keys = dict(keys)
        self.ttl_s = ttl_s
        # Both kept current by console/access.py: accounts an operator disabled, and
        # sessions that ended (a logout, a refresh token used twice, a disable).
        self._disabled = disabled
        self._ended = ended

    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID, *,
              now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        kid, secret = self._signing
        claims = {"sub": str(user_id), "sid": str(session_id), "iat": issued,
                  "exp": issued + self.ttl_s}
        return jwt.encode(claims, secret, algorithm=_ALGORITHM, headers={"kid": kid})

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; `Unauthenticated` otherwise."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            secret = self._keys.get(kid) if isinstance(kid, str) else None
            if secret is None:  # none, or one no longer (or never) listed
                raise Unauthenticated("the token is not valid")
            claims = jwt.decode(token, secret, algorithms=[_ALGORITHM],
                                options={"require": ["exp", "sub", "sid"]})
            found = Claims(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]),
                           float(claims["exp"]))
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, AttributeError):
            raise Unauthenticated("the token is not valid") from None
        if found.user_id in self._disabled:
            raise Unauthenticated("this account has been disabled")
        if found.session_id in self._ended:
            raise Unauthenticated("the session has ended")
        return found

    def from_header(self, authorization: str | None) -> Claims:
        return self.verify(bearer_token(authorization))

    def user_from_header(self, authorization: str | None) -> uuid.UUID:
        return self.from_header(authorization).user_id


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; `Unauthenticated` otherwise."""
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
