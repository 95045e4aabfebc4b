"""The consent policy: the one place that says what each consent level allows.

Levels (design.md, "Privacy semantics"):

- ``personalized`` (the default): every event type is stored and used for the user's
  recommendations; they take part in experiments.
- ``purchases_only``: only ``purchase`` events are stored (views, searches, carts, favourites and
  ratings are dropped at the gate) and only purchases are used, also those stored before the
  user lowered their level. Results are personalised from the purchases.
- ``anonymous``: no event is stored and none is used; the user is served non-personalised
  results (the DP popularity) and is not enrolled in experiments. Only the consent record itself
  is kept, because the gate must remember the choice.

A change applies to the next request: `ConsentStore` reads the table on every call (no cache
here). Raw user ids never reach this module: callers pseudonymise first.

How the service uses it:

    store = ConsentStore.open(data_dir)           # migrates an older consent.json once
    levels = store.levels(pseudonyms)             # one query per chunk, defaults included
    mask = keeps(level_per_row, event_types)      # which rows the gate may store
    history = history[uses(level, history.event_types)]   # what serving may use
    if not personalised(level): serve the DP popularity
    if enrolled_in_experiments(level): assign a variant
    store.delete(pseudonym)                       # part of erasure (forget)

Given the sidecar key (`ConsentStore.open(data_dir, key=...)`; the service always gives it), a
row holds HMAC-SHA256(key, pseudonym) as its lookup key and, in the ``level`` column, the sealed
JSON ``{"p": pseudonym, "l": level}`` (base64 of AES-256-GCM with a fresh nonce each, so equal
levels do not look equal). Plaintext rows of older tables are sealed when the store is opened
with the key. The time of the change stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from privrec.core.errors import ValidationError
from privrec.core.types import EVENT_CODE, EVENT_TYPES


class ConsentLevel(StrEnum):
    """A user's consent level (its value is what is stored and what the API shows)."""

    PERSONALIZED = "personalized"
    PURCHASES_ONLY = "purchases_only"
    ANONYMOUS = "anonymous"


DEFAULT_LEVEL = ConsentLevel.PERSONALIZED
LEVELS: tuple[ConsentLevel, ...] = tuple(ConsentLevel)
LEVEL_NAMES = frozenset(lv.value for lv in ConsentLevel)

LevelLike = ConsentLevel | str


@dataclass(frozen=True)
class LevelPolicy:
    """What one consent level allows.

    Attributes:
        stored: event types the gate may store for the user.
        served: event types serving and training may use, whenever they were stored.
        personalised: whether results come from the user's own history.
        experiments: whether the user is enrolled in A/B experiments.
    """

    stored: frozenset[str]
    served: frozenset[str]
    personalised: bool
    experiments: bool


class LevelText(NamedTuple):
    """What the pages and the API say about a level."""

    title: str
    description: str


_PURCHASE = frozenset({"purchase"})
_NOTHING: frozenset[str] = frozenset()

# served equals stored at every level: events kept under an earlier, wider level are not used
# once the user lowers it (they stay stored until retention or erasure removes them).
POLICY: Mapping[ConsentLevel, LevelPolicy] = MappingProxyType(
    {
        ConsentLevel.PERSONALIZED: LevelPolicy(
            frozenset(EVENT_TYPES), frozenset(EVENT_TYPES), personalised=True, experiments=True
        ),
        ConsentLevel.PURCHASES_ONLY: LevelPolicy(
            _PURCHASE, _PURCHASE, personalised=True, experiments=True
        ),
        ConsentLevel.ANONYMOUS: LevelPolicy(
            _NOTHING, _NOTHING, personalised=False, experiments=False
        ),
    }
)

LEVEL_TEXTS: Mapping[ConsentLevel, LevelText] = MappingProxyType(
    {
        ConsentLevel.PERSONALIZED: LevelText(
            "Personalised",
            "Everything you do in the shop (views, searches, carts, favourites, ratings and "
            "purchases) is stored and used for your recommendations.",
        ),
        ConsentLevel.PURCHASES_ONLY: LevelText(
            "Purchases only",
            "Only your purchases are stored and used for your recommendations; nothing else you "
            "do is kept.",
        ),
        ConsentLevel.ANONYMOUS: LevelText(
            "Anonymous",
            "Nothing more about you is stored or used, and you see popular items instead of "
            "personal recommendations.",
        ),
    }
)


def parse_level(level: LevelLike) -> ConsentLevel:
    """The ConsentLevel named by `level` (case and surrounding blanks ignored).

    Raises:
        ValidationError: on the field ``level``, listing the levels, for any other value.
    """
    if isinstance(level, ConsentLevel):
        return level
    try:
        return ConsentLevel(str(level).strip().lower())
    except ValueError:
        allowed = ", ".join(v.value for v in ConsentLevel)
        raise ValidationError(
            "level", f"{level!r} is not a consent level; use one of {allowed}"
        ) from None


def policy(level: LevelLike) -> LevelPolicy:
    """Everything `level` allows."""
    return POLICY[parse_level(level)]


def allowed_types(level: LevelLike) -> frozenset[str]:
    """The event types the gate may store for a user at this level."""
    return policy(level).stored


def served_types(level: LevelLike) -> frozenset[str]:
    """The event types serving and training may use for a user at this level."""
    return policy(level).served


def personalised(level: LevelLike) -> bool:
    """Whether the user is served from their own history (False: serve the DP popularity)."""
    return policy(level).personalised


def enrolled_in_experiments(level: LevelLike) -> bool:
    """Whether the user may be assigned to an experiment's variant."""
    return policy(level).experiments


def describe(level: LevelLike) -> dict[str, str]:
    """The level, its title and its one-sentence description, JSON-ready."""
    lv = parse_level(level)
    text = LEVEL_TEXTS[lv]
    return {"level": lv.value, "title": text.title, "description": text.description}


def keeps(level: LevelLike | Sequence[LevelLike] | np.ndarray, types: Any) -> np.ndarray:
    """Which events the gate may store: a boolean mask over `types`.

    Args:
        level: one level for every event, or one level per event (same length as `types`).
        types: event types as strings, or as the integer codes of ``EVENT_CODE``.
            An unknown type is never kept.
    """
    return _mask(_STORED, level, types)


def uses(level: LevelLike | Sequence[LevelLike] | np.ndarray, types: Any) -> np.ndarray:
    """Which stored events serving and training may use: a boolean mask over `types`.

    Args:
        level: one level for every event, or one level per event (same length as `types`).
        types: event types as strings, or as the integer codes of ``EVENT_CODE``
            (``UserHistory.event_types``). An unknown type is never used.
    """
    return _mask(_SERVED, level, types)


def _table(field: str) -> np.ndarray:
    """[level, type code] -> allowed; one extra last column (all False) for unknown types."""
    table = np.zeros((len(LEVELS), len(EVENT_TYPES) + 1), dtype=bool)
    for i, lv in enumerate(LEVELS):
        for t in getattr(POLICY[lv], field):
            table[i, EVENT_CODE[t]] = True
    table.setflags(write=False)
    return table


_STORED = _table("stored")
_SERVED = _table("served")
_LEVEL_INDEX = {lv: i for i, lv in enumerate(LEVELS)}
_UNKNOWN = len(EVENT_TYPES)


def _type_codes(types: Any) -> np.ndarray:
    """EVENT_CODE of each type (strings or codes); the unknown column for anything else."""
    t = np.asarray(types).reshape(-1)
    if t.dtype.kind in "iu":
        codes = t.astype(np.int64)
        return np.where((codes >= 0) & (codes < _UNKNOWN), codes, _UNKNOWN)
    codes = np.full(t.shape, _UNKNOWN, dtype=np.int64)
    if t.dtype.kind in "OUS" and t.size:
        # one vectorised comparison per event type, not a Python step per event
        for name, code in EVENT_CODE.items():
            codes[t == name] = code
    return codes


def _level_rows(level: Sequence[LevelLike] | np.ndarray) -> np.ndarray:
    """Index into LEVELS of each per-event level; ValidationError for an unknown one."""
    lv = np.asarray(level, dtype=object).reshape(-1)
    rows = np.full(lv.shape, -1, dtype=np.int64)
    for i, name in enumerate(LEVELS):
        rows[lv == name.value] = i  # a ConsentLevel member equals its value
    bad = np.flatnonzero(rows < 0)
    if bad.size:
        parse_level(lv[bad[0]])  # a level in another spelling ("Anonymous") still counts
        rows[bad] = [_LEVEL_INDEX[parse_level(x)] for x in lv[bad]]
    return rows


def _mask(
    table: np.ndarray, level: LevelLike | Sequence[LevelLike] | np.ndarray, types: Any
) -> np.ndarray:
    codes = _type_codes(types)
    if isinstance(level, str):
        return np.asarray(table[_LEVEL_INDEX[parse_level(level)]][codes], dtype=bool)
    rows = _level_rows(level)
    if rows.shape != codes.shape:
        raise ValueError(f"{len(rows)} levels for {len(codes)} event types; give one per event")
    return np.asarray(table[rows, codes], dtype=bool)
