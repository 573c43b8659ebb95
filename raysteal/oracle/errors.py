"""Errors the black box raises to an attacker."""

from __future__ import annotations

from raysteal.errors import RaystealError


class QueryBudgetExceeded(RaystealError):
    """A request asked for more queries than the attacker has left; nothing was answered or charged."""

    def __init__(self, attacker: str, asked: int, remaining: int):
        self.attacker, self.asked, self.remaining = attacker, int(asked), int(remaining)
        super().__init__(f"attacker {attacker!r} asked for {asked} queries but has {remaining} left")

    def __reduce__(self):  # crosses Ray process boundaries
        return (type(self), (self.attacker, self.asked, self.remaining))


class RateLimitExceeded(RaystealError):
    """A request came faster than the attacker's rate limit allows; nothing was answered or charged."""

    def __init__(self, attacker: str, asked: int, retry_after_s: float):
        self.attacker, self.asked, self.retry_after_s = attacker, int(asked), float(retry_after_s)
        super().__init__(f"attacker {attacker!r} is rate-limited: {asked} queries refused, retry after {retry_after_s:.3f}s")

    def __reduce__(self):
        return (type(self), (self.attacker, self.asked, self.retry_after_s))


class UnknownAttacker(RaystealError):
    """A request from an attacker the server never registered."""

    def __init__(self, attacker: str):
        self.attacker = attacker
        super().__init__(f"attacker {attacker!r} is not registered with this target server")

    def __reduce__(self):
        return (type(self), (self.attacker,))


class AccessDenied(RaystealError):
    """A request with a wrong account key (querying as another attacker) or without the server
    owner's token (opening accounts, reading the ledger or the query log); nothing was answered or charged."""

    def __init__(self, attacker: str, what: str):
        self.attacker, self.what = attacker, what
        super().__init__(f"access denied to {what} for {attacker!r}: wrong key")

    def __reduce__(self):
        return (type(self), (self.attacker, self.what))
