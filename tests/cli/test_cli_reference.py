"""docs/cli.md is generated from the commands' help; it must match what they say now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

GENERATOR = Path(__file__).resolve().parents[2] / "docs" / "gen_cli.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("modelworks_docs_gen_cli", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    problem = _generator().check()
    assert problem is None, f"docs/cli.md is out of date: run python docs/gen_cli.py\n{problem}"


def test_cli_reference_is_deterministic() -> None:
    gen = _generator()
    assert gen.render() == gen.render()
