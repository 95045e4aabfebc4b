"""The one exception hierarchy of privrec.

Messages name the field, what is wrong with its value and how to fix it. They never contain
personal data: callers pass field names and problems, never raw user identifiers.
"""

from __future__ import annotations


class PrivrecError(Exception):
    """Base class of every error privrec raises on purpose."""


class ConfigError(PrivrecError):
    """A setting or model configuration is invalid."""


class ValidationError(PrivrecError):
    """An input record or argument failed validation.

    Attributes:
        field: the name of the offending field ("" when the record as a whole is bad).
        problem: what is wrong, in words a user can act on.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class StoreError(PrivrecError):
    """The event store cannot be opened, read or written."""


class NotFittedError(PrivrecError):
    """A model was used before `fit` or `load`."""


class NotFoundError(PrivrecError):
    """A requested user, item, model or file does not exist."""


class BudgetExceededError(PrivrecError):
    """A differentially private release would exceed the configured privacy budget."""


class ConflictError(PrivrecError):
    """The request conflicts with the state of the data (e.g. activating a quarantined version)."""
