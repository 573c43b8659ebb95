"""Attacker accounts' keys: a client queries as its own attacker only, and only the server's owner
opens accounts or reads the ledger and the query log.

Whoever deploys a black box gives it a secret; an attacker's key is HMAC-SHA256(secret, attacker
id), handed out once, at registration, inside that attacker's client, and the owner's token is
HMAC-SHA256(secret, a fixed label). A restarted actor, rebuilt from the same secret, accepts the
same keys without storing any. What the keys guard against is a client (or anything holding the
server's handle) spending another attacker's budget or opening accounts of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from raysteal.oracle.errors import AccessDenied

_OWNER_LABEL = b"\x00raysteal-owner"


class AccountKeys:
    """Keys derived from one server secret (random when none is given)."""

    def __init__(self, secret: bytes | None = None):
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if len(self._secret) < 16:
            raise ValueError("a server secret must be at least 16 bytes")

    def _mac(self, message: bytes) -> str:
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    @property
    def owner_token(self) -> str:
        """The token for registering attackers and reading the ledger and the query log."""
        return self._mac(_OWNER_LABEL)

    def key_for(self, attacker: str) -> str:
        """The account key of ``attacker`` (given to that attacker's client only)."""
        return self._mac(b"attacker:" + str(attacker).encode())

    def check_key(self, attacker: str, key: object) -> None:
        """Raise :class:`AccessDenied` unless ``key`` is ``attacker``'s account key."""
        if not isinstance(key, str) or not hmac.compare_digest(key, self.key_for(attacker)):
            raise AccessDenied(attacker, "the account")

    def check_owner(self, token: object, what: str) -> None:
        """Raise :class:`AccessDenied` unless ``token`` is the owner's token."""
        if not isinstance(token, str) or not hmac.compare_digest(token, self.owner_token):
            raise AccessDenied("(owner)", what)
