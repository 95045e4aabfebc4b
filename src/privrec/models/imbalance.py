"""Class imbalance: event-type weights and purchase resampling (CF and sequence models).

Purchases are rare next to views (about 2% of the Taobao log's events), so a model trained on every
event learns mostly what people look at. Two remedies, both off by default:

- Event-type weights. The CF models (`InputConfig.event_weights`) weigh each event of the user x
  item matrix by its type (e.g. view 1 < cart 3 < purchase 5); the sequence models
  (`SequentialConfig.target_weights`) weigh each training target's loss by the type of the event
  being predicted, so a purchase target counts more than a view target. A type left out weighs 1.
- Resampling (`SequentialConfig.resample_ratio`): each epoch adds training examples that end at a
  purchase (the purchase is their only target), drawn uniformly with replacement from all such
  events, until purchases make up `resample_ratio` of the epoch's targets. Nothing is removed.

The checks here give errors that name the field and say what to change; pydantic reports them
under the field's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from privrec.core.types import EVENT_CODE, EVENT_TYPES
from privrec.models.nn.tokens import PAD

__all__ = [
    "anchors_of",
    "check_event_type",
    "check_type_weights",
    "n_resampled",
    "resampled_batches",
    "type_weight_table",
]


def check_type_weights(weights: Mapping[str, float] | None, field: str) -> dict[str, float] | None:
    """`weights` as a dict of event type -> weight, or ValueError naming `field` and the problem.

    Keys must be event types, values finite and >= 0, and at least one value > 0.
    """
    if weights is None:
        return None
    out: dict[str, float] = {}
    for key, value in weights.items():
        if key not in EVENT_CODE:
            raise ValueError(
                f"{field}: unknown event type {key!r}; use some of {', '.join(EVENT_TYPES)}"
            )
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{field}: the weight of {key!r} is {value!r}; give a number >= 0")
        out[key] = v
    if not out or max(out.values()) <= 0:
        raise ValueError(f"{field}: every weight is 0 (or none is given); give one weight > 0")
    return out


def check_event_type(name: str, field: str) -> str:
    """`name` if it is an event type, else ValueError naming `field`."""
    if name not in EVENT_CODE:
        known = ", ".join(EVENT_TYPES)
        raise ValueError(f"{field}: unknown event type {name!r}; use one of {known}")
    return name


def type_weight_table(weights: Mapping[str, float]) -> np.ndarray:
    """float32 weight per event type code (EVENT_CODE order); types not given weigh 1."""
    return np.array([float(weights.get(t, 1.0)) for t in EVENT_TYPES], dtype=np.float32)


def n_resampled(n_targets: int, n_positive: int, ratio: float) -> int:
    """How many extra positive targets lift `n_positive` of `n_targets` to a share >= `ratio`.

    The smallest m with (n_positive + m) / (n_targets + m) >= ratio (0 when already there).
    """
    if n_targets <= 0 or n_positive >= ratio * n_targets:
        return 0
    return max(0, math.ceil((ratio * n_targets - n_positive) / (1.0 - ratio) - 1e-9))


def resampled_batches(
    base: Sequence[object],
    target_types: Callable[[object], np.ndarray],
    anchors: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    code: int,
    ratio: float,
    batch_size: int,
    gen: np.random.Generator,
    make: Callable[[list[tuple[np.ndarray, np.ndarray]]], object],
) -> list[object]:
    """One epoch: the `base` batches plus extra batches of resampled anchored examples, shuffled.

    Args:
        base: the epoch's ordinary batches.
        target_types: a batch's target type codes + 1 (0: no target), shaped like its targets.
        anchors: (input tokens, target tokens) examples whose only target is a positive event.
        code: the positive event type's code (EVENT_CODE).
        ratio: the share of positive targets the epoch should reach.
        batch_size: examples per extra batch.
        gen: the epoch's seeded generator (draws the anchors and the batch order).
        make: builds one batch from a list of anchored examples.
    """
    n_targets = n_positive = 0
    for b in base:
        tt = target_types(b)
        n_targets += int((tt != PAD).sum())
        n_positive += int((tt == code + 1).sum())
    m = n_resampled(n_targets, n_positive, ratio) if anchors else 0
    picks = gen.integers(0, len(anchors), size=m) if m else np.zeros(0, np.int64)
    extra = [
        make([anchors[int(j)] for j in picks[s : s + batch_size]]) for s in range(0, m, batch_size)
    ]
    batches: list[object] = [*base, *extra]
    return [batches[i] for i in gen.permutation(len(batches))]


def anchors_of(
    seqs: Iterable[np.ndarray],
    types: Iterable[np.ndarray],
    code: int,
    example: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Anchored examples: for every event of type `code` with at least one earlier event,
    `example(earlier items, item)` (the model's input and target tokens for that prediction)."""
    out = []
    for s, t in zip(seqs, types, strict=True):
        for p in np.flatnonzero(np.asarray(t) == code):
            if p >= 1:
                out.append(example(s[:p], int(s[p])))
    return out
