"""The service layer (L7): one module per responsibility behind the thin `RecSys` facade."""

from privrec.service.facade import RecSys

__all__ = ["RecSys"]
