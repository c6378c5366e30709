"""Secrets by reference: where values come from, how they are stored, masked and managed."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from modelworks.core import secrets
from modelworks.core.config import Settings, get_settings
from modelworks.core.errors import InvalidInput, NotFound
from modelworks.core.secrets_cli import secrets_app

runner = CliRunner()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# ---- resolving -----------------------------------------------------------------------------


def test_resolve_from_the_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    value = unique("env")
    monkeypatch.setenv("MODELWORKS_SECRET_PG_PW", value)
    assert secrets.resolve("pg_pw", settings) == value
    assert secrets.resolve("PG_PW", settings) == value


def test_resolve_from_a_file_and_the_environment_wins(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored, override = unique("file"), unique("env")
    secrets.store("api_token", stored + "\n", settings)
    assert secrets.resolve("api_token", settings) == stored  # the trailing newline is dropped
    monkeypatch.setenv("MODELWORKS_SECRET_API_TOKEN", override)
    assert secrets.resolve("api_token", settings) == override


def test_a_missing_secret_says_how_to_set_it(settings: Settings) -> None:
    with pytest.raises(NotFound) as info:
        secrets.resolve("nobody_set_this", settings)
    assert info.value.detail == (
        "Secret 'nobody_set_this' is not set. Set it with `modelworks secrets set "
        "nobody_set_this` or the environment variable MODELWORKS_SECRET_NOBODY_SET_THIS."
    )


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "../etc", "a" * 101])
def test_bad_names_are_refused(name: str, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="is not valid"):
        secrets.resolve(name, settings)
    with pytest.raises(InvalidInput, match="is not valid"):
        secrets.store(name, "x", settings)


# ---- storing -------------------------------------------------------------------------------


def test_store_writes_a_file_only_its_owner_reads(settings: Settings) -> None:
    path = secrets.store("pg_pw", "s3cret", settings)
    assert path == settings.home_path / "secrets" / "pg_pw"
    assert path.read_text() == "s3cret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["pg_pw"]  # no temporary file left

    secrets.store("pg_pw", "changed", settings)
    assert path.read_text() == "changed" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_names_and_delete(settings: Settings) -> None:
    assert secrets.names(settings) == []
    secrets.store("b_token", "x1", settings)
    secrets.store("a_token", "x2", settings)
    assert secrets.names(settings) == ["a_token", "b_token"]
    assert secrets.delete("a_token", settings) is True
    assert secrets.delete("a_token", settings) is False
    assert secrets.names(settings) == ["b_token"]


# ---- references and masking -------------------------------------------------------------------


def test_references_and_expand(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Unique values: every resolved value is masked in this process's messages from now on.
    user, password = unique("user"), unique("p@ss:word")
    monkeypatch.setenv("MODELWORKS_SECRET_USER", user)
    monkeypatch.setenv("MODELWORKS_SECRET_PW", password)
    text = "postgresql://${secret:user}:${secret:pw}@db/shop?x=${notasecret}"
    assert secrets.references(text) == ["user", "pw"]
    assert secrets.expand(text, settings) == (
        f"postgresql://{user}:{password}@db/shop?x=${{notasecret}}"
    )
    assert secrets.references("no references here") == []


def test_redact_masks_every_resolved_value(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = unique("token")
    longer = value + "-and-more"
    monkeypatch.setenv("MODELWORKS_SECRET_TOKEN_A", value)
    monkeypatch.setenv("MODELWORKS_SECRET_TOKEN_B", longer)
    unresolved = unique("never-resolved")
    assert secrets.redact(f"got {value}") == f"got {value}"  # not resolved yet: unknown
    secrets.resolve("token_a", settings)
    secrets.resolve("token_b", settings)
    # The longer value is masked whole, not as the shorter one plus a tail.
    assert secrets.redact(f"a={value} b={longer} c={unresolved}") == (f"a=*** b=*** c={unresolved}")


def test_redact_leaves_very_short_values(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Masking "1" or "ab" would shred every message; such values are not secrets anyway.
    monkeypatch.setenv("MODELWORKS_SECRET_TINY", "ab")
    secrets.resolve("tiny", settings)
    assert secrets.redact("tab about ab") == "tab about ab"


# ---- the CLI -------------------------------------------------------------------------------


def cli(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = runner.invoke(secrets_app, list(args), input=stdin)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def stored_path(name: str) -> Path:
    return get_settings().home_path / "secrets" / name


def test_cli_set_from_stdin_list_and_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    value = unique("stdin")
    result = cli("set", "pg_pw", "--from-stdin", stdin=value + "\n")
    assert value not in result.output
    assert "Secret 'pg_pw' stored in" in result.output and "${secret:pg_pw}" in result.output
    path = stored_path("pg_pw")
    assert path.read_text() == value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    monkeypatch.setenv("MODELWORKS_SECRET_FROM_ENV", unique("env"))
    listing = json.loads(cli("list", "--json").stdout)
    assert {"name": "pg_pw", "source": "file"} in listing
    assert {"name": "FROM_ENV", "source": "environment"} in listing
    table = cli("list").output
    assert "pg_pw" in table and "FROM_ENV" in table and value not in table

    assert "Secret 'pg_pw' deleted." in cli("delete", "pg_pw").output
    assert not path.exists()
    result = cli("delete", "pg_pw", code=3)
    assert "No stored secret 'pg_pw'" in result.output


def test_cli_set_from_a_hidden_prompt() -> None:
    value = unique("typed")
    result = cli("set", "api_token", stdin=f"{value}\n{value}\n")
    assert value not in result.output  # the prompt does not echo
    assert stored_path("api_token").read_text() == value


def test_cli_never_takes_the_value_as_an_argument() -> None:
    result = cli("set", "api_token", "the-value-itself", code=2)
    assert not stored_path("api_token").exists()
    assert "unexpected extra argument" in result.output.lower()


def test_cli_refuses_empty_values_and_bad_names() -> None:
    result = cli("set", "api_token", "--from-stdin", stdin="\n", code=2)
    assert "The value for secret 'api_token' is empty; nothing was stored." in result.output
    result = cli("set", "bad-name", "--from-stdin", stdin="x\n", code=2)
    assert "Secret name 'bad-name' is not valid" in result.output
    assert not (get_settings().home_path / "secrets").exists() or not os.listdir(
        get_settings().home_path / "secrets"
    )


def test_cli_warns_when_the_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELWORKS_SECRET_PG_PW", unique("env"))
    result = cli("set", "pg_pw", "--from-stdin", stdin="stored")
    assert "MODELWORKS_SECRET_PG_PW is set in the environment" in result.output


def test_cli_does_not_list_the_server_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELWORKS_SECRET_KEY", unique("signing"))
    assert json.loads(cli("list", "--json").stdout) == []
