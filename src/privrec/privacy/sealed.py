"""Sealed files and lines: AES-256-GCM for what lies beside the encrypted event store.

The ledger, the audit log, rejects files, consent levels, training records and model artifacts
are encrypted with one data-encryption key (`keys.sidecar_key`, 32 random bytes, kept in the
key directory, which may live outside the data directory).

Formats (every message has a fresh random 96-bit nonce; the tag authenticates all of it):

- a sealed message: ``VERSION (1 byte) | nonce (12 bytes) | ciphertext | tag (16 bytes)``, with
  the version byte and the caller's associated data (``aad``) authenticated but not encrypted;
- a sealed file (`write_sealed`): one sealed message, its ``aad`` the file's name, so a file
  copied over another one of a different name does not open;
- a sealed line (`seal_line`): the base64 of one sealed message whose plaintext is a JSON object,
  on one line. A plaintext line (older data directories) starts with ``{`` and is still read
  (`unseal_line`); base64 never starts with ``{``, so the two cannot be confused.

A wrong key, a changed byte or a swapped file raises `SealedDataError`, naming the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privrec.core.errors import PrivrecError
from privrec.core.files import write_private

__all__ = [
    "FILE_SUFFIX",
    "KEY_BYTES",
    "LINE_AAD",
    "VERSION",
    "SealedDataError",
    "is_sealed_line",
    "read_sealed",
    "seal",
    "seal_line",
    "unseal",
    "unseal_line",
    "write_sealed",
]

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
FILE_SUFFIX = ".sealed"
LINE_AAD = b"privrec:line"
_FILE_AAD = b"privrec:file:"


class SealedDataError(PrivrecError):
    """A sealed message that does not open: a wrong key, a changed byte or an unknown format."""


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise SealedDataError(
            f"sealing key has {len(key)} bytes; AES-256-GCM needs {KEY_BYTES} (keys/sidecar.key)"
        )
    return AESGCM(bytes(key))


def seal(data: bytes, key: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate `data` with a fresh random nonce.

    Args:
        data: the plaintext.
        key: 32 bytes.
        aad: associated data: authenticated, not stored; `unseal` must be given the same.

    Returns:
        ``VERSION | nonce | ciphertext | tag``.
    """
    return bytes(_seal_buffer(data, key, aad))


def _seal_buffer(data: bytes, key: bytes, aad: bytes) -> bytes | bytearray:
    """`seal`, into one buffer where the library can (no copy of a large artifact)."""
    cipher = _cipher(key)
    nonce = secrets.token_bytes(NONCE_BYTES)
    head = bytes([VERSION])
    if not hasattr(cipher, "encrypt_into"):  # cryptography < 45: one concatenation
        return head + nonce + cipher.encrypt(nonce, data, head + aad)
    buf = bytearray(1 + NONCE_BYTES + len(data) + TAG_BYTES)
    buf[0] = VERSION
    buf[1 : 1 + NONCE_BYTES] = nonce
    cipher.encrypt_into(nonce, data, head + aad, memoryview(buf)[1 + NONCE_BYTES :])
    return buf


def unseal(sealed: bytes, key: bytes, *, aad: bytes, where: str = "sealed data") -> bytes:
    """Decrypt what `seal` made, checking its tag.

    Args:
        sealed: the sealed message.
        key: the key it was sealed with.
        aad: the associated data it was sealed with.
        where: names the file or line in an error.

    Raises:
        SealedDataError: unknown version, too short, wrong key or any changed byte.
    """
    view = memoryview(sealed)  # slices of a view are not copies: artifacts are large
    if len(view) < 1 + NONCE_BYTES + TAG_BYTES:
        raise SealedDataError(f"{where}: too short to be sealed data (truncated?)")
    if view[0] != VERSION:
        raise SealedDataError(f"{where}: unknown sealed format version {view[0]}")
    nonce = bytes(view[1 : 1 + NONCE_BYTES])
    try:
        return _cipher(key).decrypt(nonce, view[1 + NONCE_BYTES :], bytes(view[:1]) + aad)
    except InvalidTag:
        raise SealedDataError(
            f"{where}: does not decrypt: it was changed, or it was sealed with another key "
            "(check PRIVREC_KEY_DIR and keys/sidecar.key)"
        ) from None


def _file_aad(path: Path) -> bytes:
    return _FILE_AAD + path.name.encode("utf-8")


def write_sealed(path: str | Path, data: bytes, key: bytes) -> None:
    """Seal `data` into `path` (atomically, mode 0600); the file's name is authenticated."""
    p = Path(path)
    write_private(p, bytes(_seal_buffer(data, key, _file_aad(p))))


def read_sealed(path: str | Path, key: bytes) -> bytes:
    """The plaintext of a file `write_sealed` wrote.

    Raises:
        SealedDataError: naming the file, when it does not decrypt.
    """
    p = Path(path)
    return unseal(p.read_bytes(), key, aad=_file_aad(p), where=str(p))


def is_sealed_line(line: str) -> bool:
    """Whether a non-blank log line is sealed (a plaintext JSON line starts with ``{``)."""
    return not line.lstrip().startswith("{")


def seal_line(obj: Any, key: bytes, *, aad: bytes = LINE_AAD) -> str:
    """One JSON-ready object as one sealed line (base64, no newline)."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return base64.b64encode(seal(data, key, aad=aad)).decode("ascii")


def unseal_line(
    line: str, key: bytes | None, *, aad: bytes = LINE_AAD, where: str = "log line"
) -> Any:
    """The object on one log line: sealed by `seal_line`, or plaintext JSON of older versions.

    Args:
        line: one line (surrounding blanks ignored).
        key: the key (None: only plaintext lines can be read).
        aad: the associated data it was sealed with.
        where: names the file and line in an error.

    Raises:
        SealedDataError: a sealed line without a key, or one that does not decrypt.
        ValueError: a plaintext line that is not JSON.
    """
    text = line.strip()
    if not is_sealed_line(text):
        return json.loads(text)
    if key is None:
        raise SealedDataError(f"{where}: is sealed; give the sidecar key to read it")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SealedDataError(f"{where}: neither JSON nor a sealed line (changed?)") from None
    return json.loads(unseal(raw, key, aad=aad, where=where))
