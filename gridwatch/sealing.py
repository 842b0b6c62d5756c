"""Sealing camera URLs for the database: their passwords are secrets, so the registry keeps them encrypted
(Fernet: AES-128-CBC with an HMAC-SHA256, a random IV per value) under the deployment's key, never in clear.

The key is `secret_key` in the config (GRIDWATCH_SECRET_KEY), or, on one box, a key made on first use in
`data_dir/secret.key` (mode 0600). Every process that opens cameras or registers them (workers, the API)
needs the same key; a value sealed under another key does not open (`SealError`, naming no secret).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"


class SealError(ValueError):
    """A sealed value that this key cannot open (another deployment's key, or damaged)."""


class SecretBox:
    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(
                "secret_key is not a key made by `gridwatch secret-key` (32 bytes, URL-safe base64)"
            ) from None

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def open(self, sealed: str, what: str = "value") -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SealError(
                f"the sealed {what} does not open with this secret_key (sealed under another key?)"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(***)"


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_box(key: str | None, data_dir: Path) -> SecretBox:
    """The box of the configured key, else of the key file under `data_dir` (made on first use)."""
    if key:
        return SecretBox(key)
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this box made it first
        else:
            with os.fdopen(fd, "w") as out:
                out.write(new_key() + "\n")
            log.info("made a new secret key for camera URLs in %s (keep it with the database)", path)
    return SecretBox(path.read_text().strip())
