"""The privacy guarantee a trained model or a release carries."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ADJACENCY = "add/remove one user"  # the neighbouring relation of every privrec DP release


@dataclass(frozen=True)
class PrivacyGuarantee:
    """An (epsilon, delta) differential-privacy guarantee and what it protects.

    Attributes:
        epsilon: the privacy loss bound (float('inf') for no protection).
        delta: the failure probability.
        unit: the unit of privacy, "user" (all of one user's events) or "event".
        mechanism: e.g. "gaussian", "laplace", "dp-sgd".
        accountant: the accountant that computed epsilon, e.g. "rdp (dp-accounting)".
        adjacency: the neighbouring relation, e.g. "add/remove one user" (under it the number
            of users is private too).
    """

    epsilon: float
    delta: float
    unit: str = "user"
    mechanism: str = ""
    accountant: str = ""
    adjacency: str = ADJACENCY

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)
