"""Secret keys in the key directory: created once with mode 0600, or given by the environment."""

from __future__ import annotations

import secrets
from pathlib import Path

from privrec.core.errors import ConfigError
from privrec.core.files import private_dir, write_private
from privrec.core.settings import Settings

KEY_BYTES = 32
KEYS_DIR = "keys"
SIDECAR_KEY_FILE = "sidecar.key"


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
    """The key chain stored at `path` (one hex key a line), with a first key created if absent."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path.name}: key file mode is {oct(mode)}; run chmod 600 on it")
        keys = [parse_hex_key(line, path.name) for line in path.read_text().split() if line]
        if not keys:
            raise ConfigError(f"{path.name}: key file is empty; restore it from backup")
        return keys
    key = secrets.token_bytes(KEY_BYTES)
    private_dir(path.parent)
    try:
        # create-once: two processes starting together must not each keep a different key
        write_private(path, key.hex() + "\n", exclusive=True)
    except FileExistsError:
        return load_or_create_keys(path)
    return [key]


def new_key() -> bytes:
    """A fresh random key (KEY_BYTES bytes from the operating system's secure source)."""
    return secrets.token_bytes(KEY_BYTES)


def write_keys(path: Path, keys: list[bytes]) -> None:
    """Store a key chain at `path` (one hex key a line), atomically, mode 0600."""
    private_dir(path.parent)
    write_private(path, "".join(k.hex() + "\n" for k in keys))


def append_key(path: Path, keys: list[bytes]) -> list[bytes]:
    """Add a fresh random key to the chain stored at `path` and return the new chain."""
    new = [*keys, new_key()]
    write_keys(path, new)
    return new


def key_dir(settings_or_data_dir: Settings | str | Path) -> Path:
    """The directory of key files: `Settings.key_dir` if set, else ``<data_dir>/keys``.

    Keeping it outside the data directory (``PRIVREC_KEY_DIR``) means a copy of the data
    directory alone does not carry the keys that open it.
    """
    if isinstance(settings_or_data_dir, Settings):
        if settings_or_data_dir.key_dir is not None:
            return Path(settings_or_data_dir.key_dir)
        return Path(settings_or_data_dir.data_dir) / KEYS_DIR
    return Path(settings_or_data_dir) / KEYS_DIR


def sidecar_key(directory: str | Path) -> bytes:
    """The data-encryption key of the files beside the event store (made once, mode 0600).

    Args:
        directory: the key directory (`key_dir`); the key is ``<directory>/sidecar.key``.
    """
    key = load_or_create_keys(Path(directory) / SIDECAR_KEY_FILE)[0]
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{SIDECAR_KEY_FILE}: key has {len(key)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return key
