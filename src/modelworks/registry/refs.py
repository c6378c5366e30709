"""Model names and references: ``churn``, ``churn@3``, ``churn@latest``, ``churn@champion``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelworks.core.errors import InvalidInput

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
RESERVED_ALIASES = frozenset({"latest"})


@dataclass(frozen=True)
class ModelRef:
    name: str
    selector: str = "latest"  # "latest", a version number as text, or an alias

    @property
    def number(self) -> int | None:
        return int(self.selector) if self.selector.isdigit() else None

    def __str__(self) -> str:
        return f"{self.name}@{self.selector}"


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise InvalidInput(
            f"Model name {name!r} is not valid: start with a letter or digit and use only "
            "letters, digits, '_', '-' and '.' (at most 200 characters), e.g. 'churn'."
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_NAME.match(alias) or alias in RESERVED_ALIASES:
        raise InvalidInput(
            f"Alias {alias!r} is not valid: start with a letter, use letters, digits, '_' and "
            "'-' (at most 64 characters), and not 'latest' (it always means the newest "
            "version), e.g. 'champion'."
        )
    return alias


def parse_model_ref(ref: str) -> ModelRef:
    """``name`` (the latest version), ``name@N``, ``name@latest`` or ``name@alias``."""
    if not isinstance(ref, str) or not ref:
        raise InvalidInput("A model reference is needed, e.g. 'churn@champion' or 'churn@3'.")
    name, sep, selector = ref.partition("@")
    check_model_name(name)
    if not sep:
        return ModelRef(name)
    if not selector:
        raise InvalidInput(
            f"Model reference {ref!r} ends with '@': add a version number, 'latest' or an "
            f"alias, e.g. {name}@champion."
        )
    if selector.isdigit():
        if int(selector) < 1:
            raise InvalidInput(f"Versions start at 1; {ref!r} names version {selector}.")
        return ModelRef(name, str(int(selector)))
    if selector != "latest":
        check_alias(selector)
    return ModelRef(name, selector)
