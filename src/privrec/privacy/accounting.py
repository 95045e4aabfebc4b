"""Composition of DP releases from their machine-readable mechanism descriptions.

A release's `event` is a JSON spec of its mechanism (noise multipliers are sensitivity-normalised,
so the spec alone fixes the privacy loss):

    {"kind": "gaussian", "noise_multiplier": z}
    {"kind": "laplace", "parameter": b}
    {"kind": "poisson_sampled", "sampling_probability": q, "event": {...}}
    {"kind": "self_composed", "count": n, "event": {...}}
    {"kind": "composed", "events": [...]}
    {"kind": "epsilon_delta", "epsilon": e, "delta": d}
    {"kind": "repeat_and_select", "mean": m, "shape": s, "event": {...}}
    {"kind": "thresholded", "delta": d, "event": {...}}

`thresholded` is a mechanism whose output is released only where a noisy value passes a
threshold (the Gaussian sparse histogram of `privacy.partition`): the inner event is the noise on
the values every neighbour shares, `delta` the probability that a value only one user
contributed passes; `compose` adds that delta by the basic rule.

`repeat_and_select` is privrec's extension for private hyper-parameter selection (Papernot &
Steinke, ICLR 2022: run a mechanism a random number of times, drawn with this mean from a truncated
negative binomial of this shape, keep the best run; shape 0 logarithmic, 1 geometric, inf
Poisson). `event_from_spec` / `spec_from_event` translate to and from `dp_accounting` events;
`epsilon_delta` has no dp_accounting event (it is a bare guarantee, not a mechanism) and is
handled by `compose` directly.

`compose` never uses a formula of its own: the accountants are dp-accounting's.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dp_accounting
from dp_accounting import pld, rdp

from privrec.core.errors import ConfigError

# PLD discretisation: pessimistic estimates, so a coarser grid only over-states epsilon; 1e-3
# keeps a ledger of hundreds of releases composable in about a second.
PLD_DISCRETIZATION = 1e-3
# The fractions of the accountants' delta tried for the PLD part when some events need RDP:
# every split is a valid bound, so the smallest of a fixed set is one too.
_PLD_DELTA_SHARES = (0.1, 0.25, 0.5, 0.75, 0.9)

Spec = dict[str, Any]


def _num(spec: Mapping[str, Any], key: str) -> float:
    try:
        value = spec[key]
    except KeyError:
        raise ConfigError(f"event spec {spec.get('kind')!r}: missing field {key!r}") from None
    if isinstance(value, str) and value.lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"event spec {spec.get('kind')!r}: {key}={value!r} is not a number")
    return float(value)


def event_from_spec(spec: Mapping[str, Any]) -> dp_accounting.DpEvent:
    """The dp_accounting event a JSON spec describes.

    Raises:
        ConfigError: an unknown kind, a missing or invalid field, or an `epsilon_delta` spec
            (a bare guarantee has no mechanism; `compose` handles it).
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"event spec: {spec!r} is not a JSON object")
    kind = spec.get("kind")
    if kind == "gaussian":
        z = _num(spec, "noise_multiplier")
        if not z >= 0:
            raise ConfigError(f"event spec gaussian: noise_multiplier={z} is negative")
        return dp_accounting.GaussianDpEvent(z)
    if kind == "laplace":
        b = _num(spec, "parameter")
        if not b >= 0:
            raise ConfigError(f"event spec laplace: parameter={b} is negative")
        return dp_accounting.LaplaceDpEvent(b)
    if kind == "poisson_sampled":
        q = _num(spec, "sampling_probability")
        if not 0 <= q <= 1:
            raise ConfigError(f"event spec poisson_sampled: sampling_probability={q} not in [0,1]")
        return dp_accounting.PoissonSampledDpEvent(q, event_from_spec(spec.get("event", {})))
    if kind == "self_composed":
        n = _num(spec, "count")
        if n < 0 or n != int(n):
            raise ConfigError(f"event spec self_composed: count={n} is not a whole number >= 0")
        return dp_accounting.SelfComposedDpEvent(event_from_spec(spec.get("event", {})), int(n))
    if kind == "composed":
        events = spec.get("events")
        if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):
            raise ConfigError("event spec composed: 'events' is not a list")
        return dp_accounting.ComposedDpEvent([event_from_spec(e) for e in events])
    if kind == "repeat_and_select":
        mean, shape = _num(spec, "mean"), _num(spec, "shape")
        if not mean >= 1 or not shape >= 0:
            raise ConfigError(
                f"event spec repeat_and_select: mean={mean} must be >= 1, shape={shape} >= 0"
            )
        inner = event_from_spec(spec.get("event", {}))
        return dp_accounting.dp_event.RepeatAndSelectDpEvent(inner, mean, shape)
    if kind in ("epsilon_delta", "thresholded"):
        # inside another spec their delta would be lost: only compose() (top level) reads them
        raise ConfigError(
            f"event spec {kind}: its delta has no dp_accounting event; give it as a release's "
            "whole spec (compose() adds the delta by the basic rule)"
        )
    raise ConfigError(f"event spec: unknown kind {kind!r}")


def check_spec(spec: Mapping[str, Any]) -> None:
    """Raise ConfigError unless `spec` is a valid release spec (any kind `compose` reads)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"event spec: {spec!r} is not a JSON object")
    kind = spec.get("kind")
    if kind == "epsilon_delta":
        e, d = _num(spec, "epsilon"), _num(spec, "delta")
        if not (e >= 0 and 0 <= d < 1):
            raise ConfigError(f"event spec epsilon_delta: invalid ({e}, {d})")
    elif kind == "thresholded":
        d = _num(spec, "delta")
        if not 0 <= d < 1:
            raise ConfigError(f"event spec thresholded: delta={d} is not in [0, 1)")
        event_from_spec(spec.get("event", {}))
    else:
        event_from_spec(spec)


def spec_from_event(event: dp_accounting.DpEvent) -> Spec:
    """The JSON spec of a dp_accounting event (the inverse of `event_from_spec`).

    Raises:
        ConfigError: an event kind the spec does not describe.
    """
    dpe = dp_accounting.dp_event
    if isinstance(event, dpe.GaussianDpEvent):
        return {"kind": "gaussian", "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dpe.LaplaceDpEvent):
        return {"kind": "laplace", "parameter": float(event.noise_multiplier)}
    if isinstance(event, dpe.PoissonSampledDpEvent):
        return {
            "kind": "poisson_sampled",
            "sampling_probability": float(event.sampling_probability),
            "event": spec_from_event(event.event),
        }
    if isinstance(event, dpe.SelfComposedDpEvent):
        return {
            "kind": "self_composed",
            "count": int(event.count),
            "event": spec_from_event(event.event),
        }
    if isinstance(event, dpe.ComposedDpEvent):
        return {"kind": "composed", "events": [spec_from_event(e) for e in event.events]}
    if isinstance(event, dpe.RepeatAndSelectDpEvent):
        return {
            "kind": "repeat_and_select",
            "mean": float(event.mean),
            "shape": float(event.shape),
            "event": spec_from_event(event.event),
        }
    raise ConfigError(f"dp event: {type(event).__name__} has no JSON spec in privrec")


def epsilon_delta_spec(epsilon: float, delta: float) -> Spec:
    """The spec of a bare (epsilon, delta) guarantee (composed by the basic rule)."""
    return {"kind": "epsilon_delta", "epsilon": float(epsilon), "delta": float(delta)}


def _pure_epsilon(spec: Mapping[str, Any]) -> float | None:
    """Epsilon of a pure-DP spec (Laplace and compositions of it), None for any other."""
    kind = spec.get("kind")
    if kind == "laplace":
        b = _num(spec, "parameter")
        return math.inf if b == 0 else 1.0 / b
    if kind == "self_composed":
        inner = _pure_epsilon(spec.get("event", {}))
        return None if inner is None else int(_num(spec, "count")) * inner
    if kind == "composed":
        parts = [_pure_epsilon(e) for e in spec.get("events", [])]
        return None if any(p is None for p in parts) else math.fsum(p or 0.0 for p in parts)
    return None


def _pld() -> pld.PLDAccountant:
    return pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)


def _grouped(specs: Iterable[Mapping[str, Any]]) -> list[dp_accounting.DpEvent]:
    """Identical specs as one self-composed event each (one PLD self-convolution, not n)."""
    counts = Counter(json.dumps(s, sort_keys=True) for s in specs)
    out = []
    for key, n in counts.items():
        ev = event_from_spec(json.loads(key))
        out.append(ev if n == 1 else dp_accounting.SelfComposedDpEvent(ev, n))
    return out


def _epsilon(accountant: Any, events: Sequence[dp_accounting.DpEvent], delta: float) -> float:
    for ev in events:
        accountant.compose(ev)
    return float(accountant.get_epsilon(delta))


def compose(specs: Iterable[Mapping[str, Any]], *, delta: float) -> float:
    """Total epsilon at `delta` of all the releases these specs describe (user-level, add/remove).

    How:
    - Mechanism specs (everything but `epsilon_delta`) are composed by dp-accounting's PLD
      accountant (pessimistic, discretisation `PLD_DISCRETIZATION`). Specs PLD cannot handle
      (e.g. `repeat_and_select`) are composed by its RDP accountant instead, and the two parts
      are joined by the basic rule, their delta split at the best of a few fixed shares.
    - At delta 0 (pure DP) only Laplace specs have a finite epsilon: the sum of 1 / b.
    - `thresholded` specs: the inner event joins the mechanisms, the threshold's delta the bare
      guarantees below (as epsilon 0, delta d).
    - `epsilon_delta` specs are joined by the basic rule: with (e_i, d_i) their guarantees, the
      accountants get the remaining delta `delta - sum d_i` and the result is their epsilon plus
      `sum e_i`. The whole is then (epsilon, delta)-DP by basic composition of the parts.

    Returns:
        the epsilon (0.0 for no releases; inf when the bare deltas leave no delta for the
        mechanisms, or a mechanism has no privacy at this delta).

    Raises:
        ConfigError: an invalid spec, delta outside [0, 1), or a spec neither accountant handles.
    """
    if not 0 <= delta < 1:
        raise ConfigError(f"delta: {delta} is not in [0, 1)")
    bare: list[tuple[float, float]] = []
    mechanisms: list[Mapping[str, Any]] = []
    for s in specs:
        if isinstance(s, Mapping) and s.get("kind") == "epsilon_delta":
            e, d = _num(s, "epsilon"), _num(s, "delta")
            if not (e >= 0 and 0 <= d < 1):
                raise ConfigError(f"event spec epsilon_delta: invalid ({e}, {d})")
            bare.append((e, d))
        elif isinstance(s, Mapping) and s.get("kind") == "thresholded":
            d = _num(s, "delta")
            if not 0 <= d < 1:
                raise ConfigError(f"event spec thresholded: delta={d} is not in [0, 1)")
            bare.append((0.0, d))
            mechanisms.append(s.get("event", {}))
        else:
            mechanisms.append(s)
    bare_eps = math.fsum(e for e, _ in bare)
    rest = delta - math.fsum(d for _, d in bare)
    if rest < 0:
        return math.inf
    if not mechanisms:
        return bare_eps
    if rest == 0:
        # The accountants' pessimistic tails give inf at delta 0; pure-DP parts compose exactly
        # by the basic rule there, anything else has no finite epsilon at delta 0.
        pure = [_pure_epsilon(s) for s in mechanisms]
        if all(p is not None for p in pure):
            return bare_eps + math.fsum(p or 0.0 for p in pure)
        return math.inf
    events = _grouped(mechanisms)
    pld_events = [e for e in events if _pld().supports(e)]
    rdp_events = [e for e in events if not _pld().supports(e)]
    for e in rdp_events:
        if not rdp.RdpAccountant().supports(e):
            raise ConfigError(
                f"event {spec_from_event(e)}: neither the PLD nor the RDP accountant handles it"
            )
    if not rdp_events:
        return bare_eps + _epsilon(_pld(), pld_events, rest)
    if not pld_events:
        return bare_eps + _epsilon(rdp.RdpAccountant(), rdp_events, rest)
    acc_pld, acc_rdp = _pld(), rdp.RdpAccountant()
    for e in pld_events:
        acc_pld.compose(e)
    for e in rdp_events:
        acc_rdp.compose(e)
    best = min(
        float(acc_pld.get_epsilon(share * rest)) + float(acc_rdp.get_epsilon((1 - share) * rest))
        for share in _PLD_DELTA_SHARES
    )
    return bare_eps + best


def basic_sum(entries: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The basic-composition total (sum of epsilons, sum of deltas), for comparison."""
    pairs = list(entries)
    return math.fsum(e for e, _ in pairs), math.fsum(d for _, d in pairs)
