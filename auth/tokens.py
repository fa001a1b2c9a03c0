"""JWT issue and verify: HS256 only, `sub` and `exp` required."""

from __future__ import annotations

import time
import uuid
from collections.abc import Container

import jwt

from persistence.errors import Unauthenticated

_ALGORITHM = "HS256"


class Tokens:
    def __init__(self, secret: str, *, ttl_s: int,
                 disabled: Container[uuid.UUID] = frozenset()) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._disabled = disabled  # accounts an operator disabled: their tokens stop working

    def issue(self, user_id: uuid.UUID, *, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {"sub": str(user_id), "iat": issued, "exp": issued + self._ttl_s}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> tuple[uuid.UUID, float]:
        """The user id and expiry time of a valid token; `Unauthenticated` otherwise."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM],
                                options={"require": ["exp", "sub"]})
            user_id, expires = uuid.UUID(claims["sub"]), float(claims["exp"])
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthenticated("the token is not valid") from None
        if user_id in self._disabled:
            raise Unauthenticated("this account has been disabled")
        return user_id, expires

    def user_from_header(self, authorization: str | None) -> uuid.UUID:
        return self.verify(bearer_token(authorization))[0]


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; `Unauthenticated` otherwise."""
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
