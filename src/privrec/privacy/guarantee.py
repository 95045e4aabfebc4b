"""The privacy guarantee a trained model or a release carries."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from privrec.core.errors import ConfigError

ADJACENCY = "add/remove one user"  # the neighbouring relation of every privrec DP release


@dataclass(frozen=True)
class PrivacyGuarantee:
    """An (epsilon, delta) differential-privacy guarantee and what it protects.

    Attributes:
        epsilon: the privacy loss bound: finite and positive (no protection is no guarantee).
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

    def __post_init__(self) -> None:
        # epsilon = inf promises nothing: such a model has no guarantee (privacy None), never one
        # that reads like DP
        if not (0 < self.epsilon < math.inf):
            raise ConfigError(
                f"epsilon: {self.epsilon} is no differential-privacy guarantee; give a finite "
                "epsilon > 0, or record no guarantee (None)"
            )
        if not (0 <= self.delta < 1):
            raise ConfigError(f"delta: {self.delta} is not in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)
