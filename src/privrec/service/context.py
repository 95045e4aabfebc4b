"""What every service module shares: the settings, the data directory, its keys and its store.

One `ServiceContext` per data directory. It owns the pseudonymiser (the key holder) and the
encrypted event store, opening each on first use, so a command that touches neither (listing
models, say) never creates a key or opens the store.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path

from privrec.core.files import private_dir, write_private
from privrec.core.settings import Settings
from privrec.events.gate import Gate
from privrec.events.store_api import EventStoreAPI, open_store
from privrec.privacy.audit_log import AUDIT_KEY_FILE, AuditLog
from privrec.privacy.keys import key_dir, sidecar_key
from privrec.privacy.ledger import Budget, PrivacyLedger
from privrec.privacy.pseudonym import Pseudonymiser


class ServiceContext:
    """The data directory's settings, pseudonymiser, event store and privacy ledger.

    Args:
        settings: runtime settings (defaults < privrec.toml < PRIVREC_* environment).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.data_dir = private_dir(Path(self.settings.data_dir))
        self._pseudonymiser: Pseudonymiser | None = None
        self._store: EventStoreAPI | None = None
        self._sidecar_key: bytes | None = None

    @property
    def pseudonymiser(self) -> Pseudonymiser:
        """The data directory's pseudonymiser (key created on first use, mode 0600)."""
        if self._pseudonymiser is None:
            key = self.settings.pseudonym_key
            env = key.get_secret_value() if key else None
            self._pseudonymiser = Pseudonymiser.from_data_dir(
                self.data_dir, env_key=env, key_dir=self.key_dir
            )
        return self._pseudonymiser

    def pseudonymise(self, user_id: str) -> str:
        """The pseudonym of a raw user id (the raw id goes no further than this call)."""
        return self.pseudonymiser.pseudonymise(user_id)

    def replace_pseudonymiser(self, rotated: Pseudonymiser) -> None:
        """Use a rotated key from now on (after the store has been re-keyed)."""
        self._pseudonymiser = rotated

    def gate(self) -> Gate:
        """A privacy gate over the current key and the settings."""
        return Gate.from_settings(self.settings, self.pseudonymiser)

    @property
    def store(self) -> EventStoreAPI:
        """The event store (opened on first use): embedded DuckDB, or PostgreSQL by store_url."""
        if self._store is None:
            key = self.settings.store_key.get_secret_value() if self.settings.store_key else None
            url = self.settings.store_url.get_secret_value() if self.settings.store_url else None
            self._store = open_store(self.data_dir, store_url=url, key=key, key_dir=self.key_dir)
        return self._store

    @property
    def store_is_open(self) -> bool:
        """Whether the store has been opened by this process."""
        return self._store is not None

    @property
    def key_dir(self) -> Path:
        """The key directory (`Settings.key_dir`, default DATA_DIR/keys), made with mode 0700."""
        d = key_dir(self.settings)
        # an existing one is left as it is: it may be a read-only mount of a secret store
        return d if d.is_dir() else private_dir(d)

    @property
    def sidecar_key(self) -> bytes:
        """The key that seals the files beside the store: ledger, audit log, rejects, consent
        levels, training records and model artifacts (``sidecar.key``, made once, mode 0600)."""
        if self._sidecar_key is None:
            self._sidecar_key = sidecar_key(self.key_dir)
        return self._sidecar_key

    @property
    def ledger(self) -> PrivacyLedger:
        """The privacy-budget ledger of the releases served from this data directory (sealed)."""
        s = self.settings
        return PrivacyLedger(
            self.data_dir,
            Budget(s.privacy_budget_epsilon, s.privacy_budget_delta),
            key=self.sidecar_key,
        )

    def audit_log(self) -> AuditLog:
        """The audit log, its chain keyed (keys/audit.key, made once, mode 0600) and anchored in
        the encrypted store, so edits and a cut tail are both detected."""
        key_file = self.key_dir / AUDIT_KEY_FILE
        if not key_file.exists():
            with contextlib.suppress(FileExistsError):  # another process made it first
                write_private(key_file, secrets.token_bytes(32), exclusive=True)
        return AuditLog(
            self.data_dir,
            key=key_file.read_bytes(),
            anchor=_StoreAnchor(self),
            seal_key=self.sidecar_key,
        )

    @property
    def models_dir(self) -> Path:
        """Where versioned model artifacts live."""
        return self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        """Default folder for evaluation reports."""
        return self.data_dir / "reports"

    def close(self) -> None:
        """Close the store (checkpointing it)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def wipe(self) -> None:
        """Delete the whole data directory and start an empty one (the demo starts clean)."""
        self.close()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        private_dir(self.data_dir)
        self._pseudonymiser = None
        self._sidecar_key = None  # a key directory inside the data directory went with it


class _StoreAnchor:
    """The audit log's length and last hash, inside the encrypted event store."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def get(self) -> tuple[int, str] | None:
        value = self._ctx.store.meta().get("audit_anchor")
        if value is None:
            return None
        count, _, last = value.partition(":")
        return int(count), last

    def set(self, count: int, last_hash: str) -> None:
        self._ctx.store.set_meta("audit_anchor", f"{count}:{last_hash}")  # one write: consistent
