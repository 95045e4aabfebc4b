"""Secret keys in the data directory: created once with mode 0600, or given by the environment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from privrec.core.errors import ConfigError

KEY_BYTES = 32


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` so that only the owner can ever read it (no window with wider mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def parse_hex_key(value: str, name: str) -> bytes:
    """Decode a hex key given by configuration, with an error that names the setting."""
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        raise ConfigError(
            f"{name}: not a hex string; give {KEY_BYTES} random bytes as hex"
        ) from None
    if len(key) < 16:
        raise ConfigError(
            f"{name}: key has {len(key)} bytes; give at least 16 (recommended {KEY_BYTES})"
        )
    return key


def load_or_create_keys(path: Path) -> list[bytes]:
    """Return the key chain stored at `path` (one hex key a line), creating a first key if absent."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path.name}: key file mode is {oct(mode)}; run chmod 600 on it")
        keys = [parse_hex_key(line, path.name) for line in path.read_text().split() if line]
        if not keys:
            raise ConfigError(f"{path.name}: key file is empty; restore it from backup")
        return keys
    key = secrets.token_bytes(KEY_BYTES)
    _write_private(path, key.hex() + "\n")
    return [key]


def append_key(path: Path, keys: list[bytes]) -> list[bytes]:
    """Add a fresh random key to the chain stored at `path` and return the new chain."""
    new = [*keys, secrets.token_bytes(KEY_BYTES)]
    _write_private(path, "".join(k.hex() + "\n" for k in new))
    return new
