"""Names and references: ``churn``, ``churn@3``, ``churn@latest``, ``churn@golden``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelworks.core.errors import InvalidInput

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
RESERVED_TAGS = frozenset({"latest"})


@dataclass(frozen=True)
class DatasetRef:
    name: str
    selector: str = "latest"  # "latest", a version number as text, or a tag

    @property
    def number(self) -> int | None:
        return int(self.selector) if self.selector.isdigit() else None

    def __str__(self) -> str:
        return f"{self.name}@{self.selector}"


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise InvalidInput(
            f"Dataset name {name!r} is not valid: start with a letter or digit and use only "
            "letters, digits, '_', '-' and '.' (at most 200 characters), e.g. 'churn-2024'."
        )
    return name


def check_tag_name(tag: str) -> str:
    if not isinstance(tag, str) or not TAG_NAME.match(tag) or tag in RESERVED_TAGS:
        raise InvalidInput(
            f"Tag {tag!r} is not valid: start with a letter, use letters, digits, '_', '-' "
            "and '.', and not 'latest' (it always means the newest version), e.g. 'golden'."
        )
    return tag


def parse_ref(ref: str) -> DatasetRef:
    """``name`` or ``name@selector``; a bare name means the latest ready version."""
    if not isinstance(ref, str) or not ref:
        raise InvalidInput(
            "A dataset reference is needed, e.g. 'churn', 'churn@3' or 'churn@latest'."
        )
    name, sep, selector = ref.partition("@")
    check_dataset_name(name)
    if not sep:
        return DatasetRef(name)
    if not selector:
        raise InvalidInput(
            f"Dataset reference {ref!r} ends with '@': add a version number, 'latest' or a tag, "
            f"e.g. {name}@latest."
        )
    if selector.isdigit():
        if int(selector) < 1:
            raise InvalidInput(f"Versions start at 1; {ref!r} names version {selector}.")
        return DatasetRef(name, str(int(selector)))
    if selector != "latest":
        check_tag_name(selector)
    return DatasetRef(name, selector)
