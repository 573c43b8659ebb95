"""Attacker accounts' keys: a client queries as its own attacker only, and only the server's owner
opens accounts or reads the ledger and the query log.

Whoever deploys a black box gives it a secret; an attacker's key is HMAC-SHA256(secret, attacker
id), handed out once, at registration, inside that attacker's client, and the owner's token is
HMAC-SHA256(secret, a fixed label). A restarted actor, rebuilt from the same secret, accepts the
same keys without storing any. What the keys guard against is a client being used, by mistake or
on purpose, as another attacker's through the API, and a handle holder opening accounts or
reading the ledger. They are not a sandbox: Ray isolates nothing between code of one job (an
actor handle can run any function on the actor with Ray's built-in ``__ray_call__``), and the
in-process oracle shares the attacker's process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from raysteal.oracle.errors import AccessDenied

_OWNER_LABEL = b"\x00raysteal-owner"


def _same(given: object, expected: str) -> bool:
    """Constant-time comparison of a caller's string (any string: compare_digest refuses non-ASCII str)."""
    return isinstance(given, str) and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


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
        return self._mac(b"attacker:" + str(attacker).encode("utf-8", "surrogatepass"))

    def check_key(self, attacker: str, key: object) -> None:
        """Raise :class:`AccessDenied` unless ``key`` is ``attacker``'s account key."""
        if not _same(key, self.key_for(attacker)):
            raise AccessDenied(attacker, "the account")

    def check_owner(self, token: object, what: str) -> None:
        """Raise :class:`AccessDenied` unless ``token`` is the owner's token."""
        if not _same(token, self.owner_token):
            raise AccessDenied("(owner)", what)
