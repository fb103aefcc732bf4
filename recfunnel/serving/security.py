"""API keys: two roles, constant-time checks, keys read from a file or the environment.

Format (file or environment variable): one key per entry, ``role:key``, entries on
separate lines (or, in an environment variable, separated by commas); ``#`` starts a
comment line. Roles: ``read-write`` (alias ``rw``) and ``read-only`` (alias ``ro``).
A read-only key may ask for recommendations, health and metrics; it cannot post
events, publish items or call the admin endpoints.

Clients send the key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
Missing or unknown key: 401; a read-only key on a write endpoint: 403.

>>> ring = KeyRing.parse("rw:secret-1\\n# comment\\nread-only:viewer-2")
>>> ring.role_of("secret-1"), ring.role_of("viewer-2"), ring.role_of("nope")
('read-write', 'read-only', None)
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from recfunnel.errors import ConfigError

READ_WRITE = "read-write"
READ_ONLY = "read-only"
_ROLES = {"read-write": READ_WRITE, "rw": READ_WRITE, "read-only": READ_ONLY, "ro": READ_ONLY}

#: the shortest key accepted: shorter keys are guessable
MIN_KEY_LENGTH = 8


class AuthError(Exception):
    """A request failed authentication (401) or authorisation (403)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class KeyRing:
    """The configured keys, as (key bytes, role) pairs."""

    entries: tuple[tuple[bytes, str], ...] = ()

    @classmethod
    def parse(cls, text: str, source: str = "api keys") -> KeyRing:
        entries = []
        for n, raw in enumerate(text.replace(",", "\n").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            role, sep, key = line.partition(":")
            role, key = role.strip().lower(), key.strip()
            if not sep or role not in _ROLES:
                raise ConfigError(f"{source}, entry {n}: expected 'read-write:<key>' or 'read-only:<key>'")
            if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
                raise ConfigError(f"{source}, entry {n}: a key needs at least {MIN_KEY_LENGTH} "
                                  "characters and no spaces")
            entries.append((key.encode("utf-8"), _ROLES[role]))
        return cls(tuple(entries))

    @classmethod
    def load(cls, path: Path | None, env_var: str | None) -> KeyRing:
        """Keys from the file ``path`` (if given) and the environment variable ``env_var``."""
        entries: list[tuple[bytes, str]] = []
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"API key file {path} does not exist")
            entries += cls.parse(path.read_text(), f"API key file {path}").entries
        if env_var and os.environ.get(env_var, "").strip():
            entries += cls.parse(os.environ[env_var], f"environment variable {env_var}").entries
        return cls(tuple(entries))

    def __len__(self) -> int:
        return len(self.entries)

    def role_of(self, key: str | None) -> str | None:
        """The role of ``key``, None when unknown. Every configured key is compared, each
        with :func:`hmac.compare_digest`, so the time taken says nothing about which matched."""
        if key is None:
            return None
        candidate = key.encode("utf-8", "surrogateescape")
        found = None
        for known, role in self.entries:
            if hmac.compare_digest(candidate, known) and found is None:
                found = role
        return found


def key_from_headers(headers) -> str | None:
    """The key a request carries (``X-API-Key`` or ``Authorization: Bearer``)."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


@dataclass(frozen=True)
class Authenticator:
    """Decides whether a request may call an endpoint.

    Args:
        keys: the configured keys.
        anonymous: serve without keys (only when none are configured).
    """

    keys: KeyRing
    anonymous: bool = False

    def check(self, headers, *, write: bool) -> str:
        """The caller's role; raises :class:`AuthError` (401/403) when not allowed."""
        if self.anonymous:
            return READ_WRITE
        key = key_from_headers(headers)
        if key is None:
            raise AuthError(401, "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'")
        role = self.keys.role_of(key)
        if role is None:
            raise AuthError(401, "invalid API key")
        if write and role != READ_WRITE:
            raise AuthError(403, "this API key is read-only: it cannot post events, publish items or "
                                 "call the admin endpoints")
        return role


def make_authenticator(keys: KeyRing, *, allow_anonymous: bool, loopback: bool) -> Authenticator:
    """Keys when configured; otherwise anonymous access, but only on a loopback host."""
    if len(keys):
        return Authenticator(keys, anonymous=False)
    if allow_anonymous and loopback:
        return Authenticator(keys, anonymous=True)
    raise ConfigError("the service listens on a non-loopback address but no API key is configured; "
                      "pass --api-keys FILE or set the keys' environment variable")
