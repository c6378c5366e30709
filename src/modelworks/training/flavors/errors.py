"""Errors of the model flavors and packages."""

from __future__ import annotations

from modelworks.core.errors import InvalidInput

__all__ = ["UntrustedModel"]


class UntrustedModel(InvalidInput):
    """A model file holds types (or a pickle) that load only with ``trust=True``."""
