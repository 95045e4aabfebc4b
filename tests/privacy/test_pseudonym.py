"""Pseudonymisation: keyed, stable, 128-bit, keys private on disk, rotation chains correctly."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from privrec.core.errors import ConfigError
from privrec.privacy.pseudonym import KEY_FILE, Pseudonymiser


def test_pseudonym_is_hmac_sha256_truncated_to_128_bits(data_dir: Path) -> None:
    p = Pseudonymiser.from_data_dir(data_dir)
    key = bytes.fromhex((data_dir / "keys" / KEY_FILE).read_text().split()[0])
    expected = hmac.new(key, b"alice@example.com", hashlib.sha256).hexdigest()[:32]
    assert p.pseudonymise("alice@example.com") == expected
    assert len(expected) == 32


def test_key_file_is_private_and_reused(data_dir: Path) -> None:
    a = Pseudonymiser.from_data_dir(data_dir).pseudonymise("u1")
    path = data_dir / "keys" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert Pseudonymiser.from_data_dir(data_dir).pseudonymise("u1") == a


def test_different_keys_give_unlinkable_pseudonyms(tmp_path: Path) -> None:
    a = Pseudonymiser.from_data_dir(tmp_path / "a").pseudonymise("u1")
    b = Pseudonymiser.from_data_dir(tmp_path / "b").pseudonymise("u1")
    assert a != b
    assert "u1" not in a


def test_world_readable_key_file_is_refused(data_dir: Path) -> None:
    Pseudonymiser.from_data_dir(data_dir)
    path = data_dir / "keys" / KEY_FILE
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Pseudonymiser.from_data_dir(data_dir)


def test_environment_key_is_used_and_never_written(data_dir: Path) -> None:
    env_key = "ab" * 32
    p = Pseudonymiser.from_data_dir(data_dir, env_key=env_key)
    expected = hmac.new(bytes.fromhex(env_key), b"u1", hashlib.sha256).hexdigest()[:32]
    assert p.pseudonymise("u1") == expected
    rotated = p.rotate()
    assert env_key not in (data_dir / "keys" / KEY_FILE).read_text()
    # After a restart the chain is rebuilt from the environment key plus the stored rotation key.
    again = Pseudonymiser.from_data_dir(data_dir, env_key=env_key)
    assert again.pseudonymise("u1") == rotated.pseudonymise("u1")


def test_bad_environment_key_names_the_setting(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="PRIVREC_PSEUDONYM_KEY"):
        Pseudonymiser.from_data_dir(data_dir, env_key="not-hex")


def test_rotation_rekeys_stored_pseudonyms_consistently(data_dir: Path) -> None:
    old = Pseudonymiser.from_data_dir(data_dir)
    stored = old.pseudonymise("u1")
    new = old.rotate()
    assert new.generation == 1
    assert new.rekey(stored) == new.pseudonymise("u1")
    assert new.pseudonymise("u1") != stored
    # The rotation persisted: a fresh load gives the same chain.
    assert Pseudonymiser.from_data_dir(data_dir).pseudonymise("u1") == new.pseudonymise("u1")


def test_a_staged_rotation_writes_nothing_until_it_commits(data_dir: Path) -> None:
    old = Pseudonymiser.from_data_dir(data_dir)
    path = data_dir / "keys" / KEY_FILE
    before = path.read_bytes()
    staged = old.stage_rotation()
    assert staged.generation == 1 and path.read_bytes() == before
    assert staged.rekey(old.pseudonymise("u1")) == staged.pseudonymise("u1")
    staged.write_pending()
    assert path.read_bytes() == before
    # the stores may already be moving: nothing may load the old key now
    with pytest.raises(ConfigError, match="interrupted"):
        Pseudonymiser.from_data_dir(data_dir)
    pending = Pseudonymiser.load_pending(data_dir)
    assert pending is not None and pending.pseudonymise("u1") == staged.pseudonymise("u1")
    staged.commit_rotation()
    assert Pseudonymiser.load_pending(data_dir) is None
    again = Pseudonymiser.from_data_dir(data_dir)
    assert again.generation == 1 and again.pseudonymise("u1") == staged.pseudonymise("u1")


def test_a_discarded_rotation_leaves_the_chain(data_dir: Path) -> None:
    old = Pseudonymiser.from_data_dir(data_dir)
    staged = old.stage_rotation()
    staged.write_pending()
    staged.discard_rotation()
    assert Pseudonymiser.from_data_dir(data_dir).pseudonymise("u1") == old.pseudonymise("u1")


def test_pseudonyms_of_every_generation(data_dir: Path) -> None:
    p0 = Pseudonymiser.from_data_dir(data_dir)
    p1 = p0.rotate()
    assert p1.pseudonyms_of("u1") == [p0.pseudonymise("u1"), p1.pseudonymise("u1")]


def test_a_staged_rotation_with_an_environment_key_keeps_it_off_disk(data_dir: Path) -> None:
    env_key = "cd" * 32
    p = Pseudonymiser.from_data_dir(data_dir, env_key=env_key)
    staged = p.stage_rotation()
    assert not (data_dir / "keys" / KEY_FILE).exists()  # nothing written while staged
    staged.write_pending()
    staged.commit_rotation()
    assert env_key not in (data_dir / "keys" / KEY_FILE).read_text()
    again = Pseudonymiser.from_data_dir(data_dir, env_key=env_key)
    assert again.pseudonymise("u1") == staged.pseudonymise("u1")
