"""Secrets kept in the database (a school's M-Pesa credentials), encrypted with Fernet (AES-128-CBC +
HMAC-SHA256, from the `cryptography` package).

The key comes from the DATA_ENCRYPTION_KEY setting, or, when that is unset, from SECRET_KEY: HKDF-SHA256
turns either into the 32 bytes Fernet needs, so any long random string will do. Changing the setting
makes what was stored unreadable (decrypt raises `SecretUnreadable`): the school enters its credentials
again. docs/PAYMENTS.md says so.
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


class SecretUnreadable(Exception):
    """A stored secret was encrypted under another key (the setting changed) or was tampered with."""


@lru_cache(maxsize=8)
def _fernet(material: str) -> Fernet:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"schoolhouse data encryption").derive(
        material.encode()
    )
    return Fernet(base64.urlsafe_b64encode(raw))


def _key_material() -> str:
    cfg = current_app.config
    material = cfg.get("DATA_ENCRYPTION_KEY") or cfg.get("SECRET_KEY")
    if not material:
        raise RuntimeError("DATA_ENCRYPTION_KEY (or SECRET_KEY) is needed to keep secrets in the database")
    return str(material)


def encrypt(text: str) -> str:
    return _fernet(_key_material()).encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(_key_material()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("a stored secret cannot be decrypted with the current key") from None
