"""Keyed pseudonymisation of user identifiers (HMAC-SHA256 truncated to 128 bits).

A raw user id exists only in memory between the door and `Pseudonymiser.pseudonymise`. Key
rotation cannot re-derive pseudonyms from raw ids (they are never stored), so a rotation chains:
p_0 = HMAC(k_0, id) and p_n = HMAC(k_n, p_{n-1}). Stored pseudonyms are re-keyed with the newest
key alone; a copy of the data taken before the rotation no longer links to the store, and linking
a raw id to a current pseudonym needs every key of the chain.

A rotation that must move several stores at once (`privrec.events.rotation`) stages the new key
in memory (`stage_rotation`), writes it beside the chain as `pseudonym.keys.pending` once every
store is staged (`write_pending`: the commit point), and makes it the chain only after every
store has committed (`commit_rotation`, an atomic rename). While a pending file exists,
`from_data_dir` refuses to load: the stores may already hold the new pseudonyms, and serving
them with the old key would silently lose every shopper's consent level. `load_pending` gives the
staged chain to the code that finishes the rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from privrec.core.errors import ConfigError
from privrec.privacy.keys import (
    append_key,
    load_or_create_keys,
    new_key,
    parse_hex_key,
    write_keys,
)

PSEUDONYM_HEX_LEN = 32  # 128 bits
KEY_FILE = "pseudonym.keys"
PENDING_FILE = KEY_FILE + ".pending"


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_LEN]


class _PaddedMac:
    """HMAC-SHA256 with the key pads hashed once: the same output as `_mac`, about 2x faster.

    OpenSSL 3's one-shot HMAC pays a provider look-up on every call, which dominates for the
    short messages of per-event ids; copying pre-hashed pad states avoids it (RFC 2104).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # the SHA-256 block size; longer keys are hashed first (RFC 2104)
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def many(self, messages: Iterable[bytes]) -> list[str]:
        inner_copy, outer_copy, n = self._inner.copy, self._outer.copy, PSEUDONYM_HEX_LEN
        out: list[str] = []
        append = out.append
        for m in messages:  # the hot loop of ingestion: bound methods, no attribute look-ups
            i = inner_copy()
            i.update(m)
            o = outer_copy()
            o.update(i.digest())
            append(o.hexdigest()[:n])
        return out


class Pseudonymiser:
    """Maps external user ids to pseudonyms with a secret key chain.

    Args:
        keys: the key chain, oldest first.
        key_file: where the chain lives (None when the chain came from the environment only).
    """

    def __init__(
        self,
        keys: list[bytes],
        key_file: Path | None = None,
        *,
        file_keys: list[bytes] | None = None,
    ) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = list(keys)
        self._key_file = key_file
        # the chain as the key file holds it (its first key is a placeholder with an
        # environment base key); set only on a staged rotation, which writes it
        self._file_keys = file_keys
        self._cache: dict[str, str] = {}
        self._fast: list[_PaddedMac] | None = None

    @classmethod
    def from_data_dir(
        cls, data_dir: Path, env_key: str | None = None, *, key_dir: Path | None = None
    ) -> Pseudonymiser:
        """Load (or create, mode 0600) the key chain in `key_dir` (default `data_dir/keys`).

        With `env_key` (PRIVREC_PSEUDONYM_KEY) the first key comes from the environment and only
        rotation keys are kept in the file.

        Raises:
            ConfigError: a key file is unreadable, or a key rotation was interrupted after its
                commit point (finish it with `privrec rotate-key`).
        """
        path = (Path(key_dir) if key_dir else Path(data_dir) / "keys") / KEY_FILE
        if (path.parent / PENDING_FILE).exists():
            raise ConfigError(
                f"{PENDING_FILE}: a key rotation was interrupted after the stores began to "
                "commit; run privrec rotate-key to finish it before anything else"
            )
        return cls._load(path, env_key)

    @classmethod
    def load_pending(
        cls, data_dir: Path, env_key: str | None = None, *, key_dir: Path | None = None
    ) -> Pseudonymiser | None:
        """The staged chain of an interrupted rotation (None when no rotation is pending).

        Raises:
            ConfigError: the pending chain does not extend the current chain by one key.
        """
        keys_dir = Path(key_dir) if key_dir else Path(data_dir) / "keys"
        pending = keys_dir / PENDING_FILE
        if not pending.exists():
            return None
        current = load_or_create_keys(keys_dir / KEY_FILE)
        staged = load_or_create_keys(pending)
        if staged[:-1] != current:
            raise ConfigError(
                f"{PENDING_FILE}: does not extend the key chain by one key; restore the keys "
                "directory from a backup"
            )
        out = cls._load(pending, env_key)
        out._key_file = keys_dir / KEY_FILE
        out._file_keys = staged
        return out

    @classmethod
    def _load(cls, path: Path, env_key: str | None) -> Pseudonymiser:
        if env_key:
            base = parse_hex_key(env_key, "PRIVREC_PSEUDONYM_KEY")
            rotations = load_or_create_keys(path)[1:] if path.exists() else []
            return cls([base, *rotations], key_file=path)
        return cls(load_or_create_keys(path), key_file=path)

    @property
    def generation(self) -> int:
        """How many rotations the chain has had."""
        return len(self._keys) - 1

    def pseudonymise(self, user_id: str) -> str:
        """Return the current pseudonym (32 hex chars) of a raw user id."""
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        p = user_id
        for key in self._keys:
            p = _mac(key, p)
        if len(self._cache) > 1_000_000:  # bound memory on endless streams
            self._cache.clear()
        self._cache[user_id] = p
        return p

    def pseudonymise_many(self, user_ids: Iterable[str]) -> list[str]:
        """Pseudonymise a batch; repeated ids cost one HMAC chain each."""
        return [self.pseudonymise(u) for u in user_ids]

    def rotate(self) -> Pseudonymiser:
        """Append a new key to the chain (persisted) and return the rotated pseudonymiser.

        The caller must re-key stored pseudonyms with `rekey` of the returned object.
        """
        if self._key_file is None:
            raise ValueError("this pseudonymiser has no key file to rotate into")
        # With an environment base key the file's first line is an unused random placeholder, so
        # the environment's key is never written to disk.
        chain = append_key(self._key_file, load_or_create_keys(self._key_file))
        keys = [*self._keys, chain[-1]]
        return Pseudonymiser(keys, key_file=self._key_file)

    def stage_rotation(self) -> Pseudonymiser:
        """The rotated pseudonymiser with a new key held in memory only (nothing is written).

        Re-key the stores with it, then `write_pending` and, once every store has committed,
        `commit_rotation`.
        """
        if self._key_file is None:
            raise ValueError("this pseudonymiser has no key file to rotate into")
        key = new_key()
        # With an environment base key the file's first line is an unused random placeholder, so
        # the environment's key is never written to disk.
        stored = load_or_create_keys(self._key_file) if self._key_file.exists() else [new_key()]
        file_keys = [*stored, key]
        return Pseudonymiser([*self._keys, key], key_file=self._key_file, file_keys=file_keys)

    @property
    def pending_path(self) -> Path | None:
        """Where a staged rotation's chain is written before it becomes the chain."""
        return None if self._key_file is None else self._key_file.with_name(PENDING_FILE)

    def write_pending(self) -> None:
        """Write the staged chain beside the key file (mode 0600): the rotation's commit point."""
        if self._file_keys is None or self.pending_path is None:
            raise ValueError("write_pending: this pseudonymiser is not a staged rotation")
        write_keys(self.pending_path, self._file_keys)

    def commit_rotation(self) -> None:
        """Make the staged chain the key chain (an atomic rename of the pending file)."""
        if self._file_keys is None or self.pending_path is None or self._key_file is None:
            raise ValueError("commit_rotation: this pseudonymiser is not a staged rotation")
        if not self.pending_path.exists():
            write_keys(self.pending_path, self._file_keys)
        os.replace(self.pending_path, self._key_file)
        _fsync_dir(self._key_file.parent)
        self._file_keys = None

    def discard_rotation(self) -> None:
        """Forget a staged rotation: remove its pending file if one was written."""
        if self.pending_path is not None:
            self.pending_path.unlink(missing_ok=True)
        self._file_keys = None

    def pseudonyms_of(self, user_id: str) -> list[str]:
        """The user's pseudonym under every generation of the chain, oldest first.

        Records written before a rotation and never re-keyed (the audit log, which is
        hash-chained and never rewritten) name the pseudonym of their generation.
        """
        out = []
        p = user_id
        for key in self._keys:
            p = _mac(key, p)
            out.append(p)
        return out

    def rekey(self, old_pseudonym: str) -> str:
        """Map a pseudonym of the previous generation to this generation's pseudonym."""
        return _mac(self._keys[-1], old_pseudonym)

    def rekey_many(self, old_pseudonyms: Iterable[str]) -> list[str]:
        """`rekey` for a batch (same results, faster)."""
        return self._macs()[-1].many(p.encode("ascii") for p in old_pseudonyms)

    def derive(self, message: str) -> str:
        """Chain-HMAC an arbitrary message, uncached (e.g. an event id built from a raw user id).

        The result is re-keyed by `rekey` exactly like a user pseudonym, so values derived from
        raw ids (event ids, session ids) survive a key rotation.
        """
        return self.derive_many([message.encode("utf-8")])[0]

    def derive_many(self, messages: Iterable[bytes]) -> list[str]:
        """`derive` for a batch of UTF-8 encoded messages (no cache: each is usually unique)."""
        macs = self._macs()
        out = macs[0].many(messages)
        for mac in macs[1:]:
            out = mac.many(p.encode("ascii") for p in out)
        return out

    def _macs(self) -> list[_PaddedMac]:
        if self._fast is None:
            self._fast = [_PaddedMac(k) for k in self._keys]
        return self._fast


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself has happened
    finally:
        os.close(fd)
