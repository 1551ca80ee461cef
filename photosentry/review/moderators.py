"""Who may review: moderators and their sign-in tokens, from a TOML config file.

    # /etc/photosentry/review.toml (readable by the review service only)
    session_secret_file = "/etc/photosentry/review.secret"   # optional
    [moderators.alice]
    token_sha256 = "<sha256 hex of alice's token>"

Only SHA-256 digests of the tokens are stored: a token is 32 random bytes, far too
many to guess, so a slow password hash would add nothing. A sign-in compares the
digest with every moderator's in constant time, so timing tells nothing about which
moderator (or how much of a digest) matched. `photosentry review token NAME` makes a
token and prints the lines to add.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..worker.review_queue import check_moderator


@dataclass(frozen=True)
class Moderators:
    """Moderators by name, each with the SHA-256 digest of their token."""

    digests: dict[str, str]
    #: Signs session cookies; random per process when the config names none
    #: (then a restart signs everyone out, which is safe).
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    @classmethod
    def from_file(cls, path: str | Path) -> "Moderators":
        try:
            raw = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read moderators config {str(path)!r}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        unknown = set(raw) - {"moderators", "session_secret_file"}
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (allowed: moderators, session_secret_file)")
        table = raw.get("moderators")
        if not isinstance(table, dict) or not table:
            raise ConfigError(f"{path}: no [moderators.<name>] tables: nobody could sign in")
        digests = {}
        for name, body in table.items():
            try:
                name = check_moderator(name)
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
            digest = body.get("token_sha256") if isinstance(body, dict) else None
            if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{path}: moderators.{name}.token_sha256 must be 64 lowercase hex digits")
            digests[name] = digest
        secret_file = raw.get("session_secret_file")
        if secret_file is None:
            return cls(digests)
        secret_path = (Path(path).parent / str(secret_file)).expanduser()
        try:
            secret = secret_path.read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read session_secret_file {str(secret_path)!r}: {exc}") from exc
        if len(secret) < 32:
            raise ConfigError(f"{path}: the session secret must be at least 32 characters")
        return cls(digests, secret)

    def authenticate(self, token: str) -> str | None:
        """The moderator whose token this is, or None. Constant time in the token."""
        given = digest_of(token or "")
        found = None
        for name, digest in self.digests.items():
            if hmac.compare_digest(given, digest):  # no early exit: every digest is compared
                found = name
        return found

    def fingerprint(self, name: str) -> str | None:
        """A short tag of the moderator's current token: a session carries it, so replacing
        a token (or removing a moderator) ends their existing sessions."""
        digest = self.digests.get(name)
        return None if digest is None else hashlib.sha256(f"session:{digest}".encode()).hexdigest()[:16]


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and its digest."""
    token = secrets.token_urlsafe(32)
    return token, digest_of(token)


__all__ = ["ConfigError", "Moderators", "digest_of", "new_token"]
