"""Server-wide keys: signing tokens and URLs, and encrypting secrets stored in the database.

The keys are random, created on first use and kept in the ``server_secrets`` table, so every
API process sharing a database signs and verifies alike with no configuration.
``TESTLENS_SECRET_KEY`` overrides them (keep the key outside the database that way).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from .database import Database
from .models import ServerSecret, utcnow

_MASTER = "master"


class Keys:
    """Derived keys for one purpose each, from one master secret."""

    def __init__(self, master: bytes) -> None:
        self._master = master
        self._fernet = Fernet(base64.urlsafe_b64encode(self.derive("secret-encryption")))

    @classmethod
    def load(cls, database: Database, configured: str | None = None) -> Keys:
        """The keys from ``configured`` (``TESTLENS_SECRET_KEY``), else from the database."""
        if configured:
            return cls(configured.encode())
        with database.transaction() as session:
            session.execute(
                database.upsert(ServerSecret, ["name"]),
                {"name": _MASTER, "value": secrets.token_hex(32), "created_at": utcnow()},
            )
            value = session.execute(
                select(ServerSecret.value).where(ServerSecret.name == _MASTER)
            ).scalar_one()
        return cls(value.encode())

    def derive(self, purpose: str) -> bytes:
        """32 bytes for ``purpose``; different purposes never share a key."""
        return hmac.new(self._master, purpose.encode(), hashlib.sha256).digest()

    def sign(self, purpose: str, message: str) -> str:
        digest = hmac.new(self.derive(purpose), message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, purpose: str, message: str, signature: str) -> bool:
        # Compared as bytes: compare_digest refuses str that is not ASCII, and a signature
        # arrives from the query string, where anything can be written.
        expected = self.sign(purpose, message).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("stored secret cannot be decrypted with this server's key") from None
