"""Password hashing (argon2id) and token signing (JWT, algorithm pinned)."""

import hashlib
import secrets
import time
import uuid

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id minimum (Password Storage Cheat Sheet): 19 MiB, t=2, p=1.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
ALGORITHM = "HS256"  # pinned: decode() accepts only this
# Verifying against this keeps a login for an unknown e-mail as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_id() -> str:
    return uuid.uuid4().hex


def encode_access_token(secret, ttl, **claims) -> str:
    now = int(time.time())
    payload = {"iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex, "typ": "access", **claims}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


_verified: dict = {}  # token -> claims: a token's signature is checked once per process, expiry every time
_VERIFIED_MAX = 20_000


def decode_access_token(secret, token) -> dict:
    """Raises jwt.InvalidTokenError on a bad, expired or foreign token."""
    key = (secret, token)
    claims = _verified.get(key)
    if claims is not None:
        if claims["exp"] <= time.time():
            _verified.pop(key, None)
            raise jwt.ExpiredSignatureError("Signature has expired")
        return claims
    claims = jwt.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        options={"require": ["exp", "iat", "sub", "sid", "ins", "role"]},
    )
    if claims.get("typ") != "access":
        raise jwt.InvalidTokenError("not an access token")
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()  # crude bound; re-verifying is only a little slower
    _verified[key] = claims
    return claims
