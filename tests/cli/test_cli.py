"""The ``modelworks`` CLI: help that teaches, --json for scripts, errors as exit codes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from modelworks.cli.main import app
from modelworks.core.auth import local_principal
from modelworks.core.store import Store
from modelworks.tracking.schemas import MetricIn
from modelworks.tracking.service import TrackingService

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render at 80 columns when not on a terminal; widen them so cells do not fold."""
    from modelworks.cli import output

    monkeypatch.setattr(output.console, "width", 200)


def cli(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = runner.invoke(app, list(args), input=stdin)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").stdout)


def _audit_count(store: Store) -> int:
    from sqlalchemy import text

    with store.transaction() as s:
        return int(s.execute(text("SELECT count(*) FROM audit_records")).scalar_one())


def _leaf_commands(
    group: TyperGroup, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, TyperGroup):
            out.extend(_leaf_commands(cmd, (*prefix, name)))
        else:
            out.append(((*prefix, name), cmd))
    return out


# ---- help -------------------------------------------------------------------------------
def test_root_help_lists_the_areas() -> None:
    out = cli("--help").stdout
    for area in (
        "quickstart",
        "experiments",
        "runs",
        "users",
        "tokens",
        "projects",
        "audit",
        "server",
        "config",
        "db",
        "version",
    ):
        assert area in out
    assert "Tracking" in out and "Governance" in out


def test_every_command_has_a_summary_and_an_example() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    leaves = _leaf_commands(root)
    assert len(leaves) >= 35
    for path, cmd in leaves:
        assert cmd.help, path
        summary = cmd.help.strip().splitlines()[0]
        assert summary.endswith("."), path
        assert "Example:" in cmd.help and "modelworks " in cmd.help, path
        result = cli(*path, "--help")
        assert summary[:30] in " ".join(result.stdout.split()), path


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, ["runs"])
    assert "search" in result.output and "compare" in result.output


def test_version() -> None:
    from modelworks import __version__

    assert __version__ in cli("version").stdout
    assert cli_json("version")["modelworks"] == __version__
    assert __version__ in cli("--version").stdout


# ---- experiments ------------------------------------------------------------------------
def test_experiments_create_list_round_trip() -> None:
    created = cli_json("experiments", "create", "churn", "--description", "d", "--tag", "team=ml")
    assert created["name"] == "churn" and created["tags"] == {"team": "ml"}
    page = cli_json("experiments", "list")
    assert [e["id"] for e in page["items"]] == [created["id"]]
    assert page["next_page_token"] is None
    shown = cli_json("experiments", "show", "churn")
    assert shown["id"] == created["id"] and shown["run_count"] == 0
    assert "churn" in cli("experiments", "list").stdout


def test_duplicate_experiment_is_a_clear_error(store: Store) -> None:
    cli("experiments", "create", "dup")
    before = _audit_count(store)
    result = cli("experiments", "create", "dup", code=4)
    assert "Error: Experiment 'dup' already exists" in result.stderr
    assert result.stdout == ""
    assert _audit_count(store) == before


def test_experiment_rename_delete_restore() -> None:
    cli("experiments", "create", "old")
    assert cli_json("experiments", "rename", "old", "new")["name"] == "new"
    cli("experiments", "show", "old", code=3)
    assert cli_json("experiments", "delete", "new")["deleted"] is True
    assert cli_json("experiments", "list")["items"] == []
    assert len(cli_json("experiments", "list", "--deleted")["items"]) == 1
    assert cli_json("experiments", "restore", "new")["deleted"] is False


def test_unknown_project_and_bad_usage() -> None:
    result = cli("experiments", "list", "-p", "nope", code=3)
    assert "Project 'nope' does not exist" in result.stderr
    result = cli("experiments", "create", code=2)  # Click's own usage error
    assert "Missing argument" in result.output
    result = cli("experiments", "create", "x", "--tag", "novalue", code=2)
    assert "KEY=VALUE" in result.output


# ---- runs -------------------------------------------------------------------------------
@pytest.fixture
def two_runs(store: Store, tmp_path: Path) -> list[str]:
    svc = TrackingService(store)
    me = local_principal()
    ids = []
    for i, (lr, acc) in enumerate([("0.1", 0.8), ("0.01", 0.9)]):
        run = svc.create_run(me, "default", "exp", name=f"r{i}", params={"lr": lr, "seed": "1"})
        svc.log_batch(
            me,
            run.id,
            metrics=[MetricIn(key="acc", value=acc - 0.1 * (2 - s), step=s) for s in range(3)],
        )
        svc.update_run(me, run.id, status="FINISHED")
        ids.append(run.id)
    (tmp_path / "cm.csv").write_text("a,b\n1,2\n")
    svc.log_artifact(me, ids[0], "eval/cm.csv", tmp_path / "cm.csv")
    return ids


def test_runs_list_show_search(two_runs: list[str]) -> None:
    listed = cli_json("runs", "list", "exp", "--order-by", "metrics.acc DESC")
    assert [r["id"] for r in listed["items"]] == [two_runs[1], two_runs[0]]
    found = cli_json("runs", "search", "--filter", "metrics.acc > 0.85", "--experiment", "exp")
    assert [r["id"] for r in found["items"]] == [two_runs[1]]
    page = cli_json("runs", "search", "--max-results", "1", "--order-by", "params.lr")
    assert len(page["items"]) == 1 and page["next_page_token"]
    rest = cli_json(
        "runs", "search", "--order-by", "params.lr", "--page-token", page["next_page_token"]
    )
    assert {page["items"][0]["id"], rest["items"][0]["id"]} == set(two_runs)
    shown = cli_json("runs", "show", two_runs[0])
    assert shown["params"] == {"lr": "0.1", "seed": "1"} and shown["status"] == "FINISHED"
    table = cli("runs", "list", "exp").stdout
    assert two_runs[0] in table and "acc" in table
    assert "lr" in cli("runs", "show", two_runs[0]).stdout


def test_runs_search_rejects_a_hostile_filter(two_runs: list[str], store: Store) -> None:
    before = _audit_count(store)
    result = cli("runs", "search", "--filter", "metrics.x = '1' OR 1=1 --", code=2)
    assert result.stderr.startswith("Error:")
    assert result.stdout == ""
    assert _audit_count(store) == before
    cli("runs", "search", "--order-by", "metrics.acc; DROP TABLE runs", code=2)
    assert len(cli_json("runs", "search")["items"]) == 2


def test_runs_compare_metrics_artifacts(two_runs: list[str], tmp_path: Path) -> None:
    cmp = cli_json("runs", "compare", *two_runs)
    assert cmp["differing_params"] == ["lr"]
    assert len(cmp["histories"]["acc"][two_runs[0]]) == 3
    assert "lr *" in cli("runs", "compare", *two_runs).stdout
    history = cli_json("runs", "metrics", two_runs[0], "--key", "acc")
    assert [p["step"] for p in history["acc"]] == [0, 1, 2]
    assert "acc" in cli_json("runs", "metrics", two_runs[1])
    artifacts = cli_json("runs", "artifacts", two_runs[0])
    assert [a["path"] for a in artifacts] == ["eval/cm.csv"]
    dest = tmp_path / "out" / "cm.csv"
    cli("runs", "download", two_runs[0], "eval/cm.csv", "--dest", str(dest))
    assert dest.read_text() == "a,b\n1,2\n"
    cli("runs", "download", two_runs[0], "missing.csv", "--dest", str(dest), code=3)


def test_runs_delete_restore(two_runs: list[str]) -> None:
    assert cli_json("runs", "delete", two_runs[0])["deleted"] is True
    assert [r["id"] for r in cli_json("runs", "list", "exp")["items"]] == [two_runs[1]]
    assert cli_json("runs", "restore", two_runs[0])["deleted"] is False
    cli("runs", "show", "no-such-run", code=3)


# ---- users, tokens, projects ------------------------------------------------------------
def test_users_and_tokens() -> None:
    user = cli_json("users", "create", "alice", "--password", "alice-password", "--email", "a@x")
    assert user["username"] == "alice" and user["is_admin"] is False
    cli("users", "create", "bob", "--password-stdin", stdin="bob-password\n")
    assert [u["username"] for u in cli_json("users", "list")] == ["alice", "bob"]
    assert "at least 8" in cli("users", "create", "carol", "--password", "short", code=2).stderr

    result = cli("tokens", "create", "laptop", "--user", "alice")
    token = result.stdout.strip()
    assert token.startswith("mw_") and len(token) > 30
    assert result.stdout.count(token) == 1
    assert "will not be shown again" in result.stderr

    local = cli("tokens", "create", "x", code=2)
    assert "--user" in local.stderr

    listed = cli_json("tokens", "list", "--user", "alice")
    assert [t["name"] for t in listed] == ["laptop"]
    assert token not in json.dumps(listed)
    table = cli("tokens", "list", "--user", "alice")
    assert "laptop" in table.stdout and token not in table.output

    revoked = cli_json("tokens", "revoke", listed[0]["id"])
    assert revoked["revoked_at"] is not None
    cli("users", "set-password", "alice", "--password", "new-password-1")
    assert cli_json("users", "disable", "alice")["disabled"] is True


def test_projects_and_members() -> None:
    cli("users", "create", "alice", "--password", "alice-password")
    assert cli_json("projects", "create", "churn", "--description", "c")["name"] == "churn"
    assert {p["name"] for p in cli_json("projects", "list")} == {"default", "churn"}
    assert cli_json("projects", "show", "churn")["description"] == "c"
    assert cli_json("projects", "members", "set", "churn", "alice", "editor")["role"] == "editor"
    assert cli_json("projects", "members", "list", "churn") == [
        {"username": "alice", "user_id": cli_json("users", "list")[0]["id"], "role": "editor"}
    ]
    assert (
        "Unknown role" in cli("projects", "members", "set", "churn", "alice", "boss", code=2).stderr
    )
    cli("projects", "members", "remove", "churn", "alice")
    assert cli_json("projects", "members", "list", "churn") == []
    cli("projects", "delete", "churn", code=1, stdin="n\n")  # declined: aborted
    cli("projects", "delete", "churn", "--yes")
    assert {p["name"] for p in cli_json("projects", "list")} == {"default"}
    assert "cannot be deleted" in cli("projects", "delete", "default", "-y", code=2).stderr


# ---- audit ------------------------------------------------------------------------------
def test_audit_verify_detects_tampering(_isolated_home: Path) -> None:
    result = cli("audit", "verify")
    assert "intact" in result.stderr
    for name in ("a", "b", "c"):
        cli("experiments", "create", name)
    assert cli_json("audit", "verify") == {"ok": True, "checked": 3, "problems": []}

    db = _isolated_home / "modelworks.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_records SET actor='mallory' WHERE seq=1")
    result = cli("audit", "verify", code=7)
    assert "record 1: content was modified" in result.stdout
    assert "broken" in result.stderr
    body = json.loads(cli("audit", "verify", "--json", code=7).stdout)
    assert body["ok"] is False and any("record 1" in p for p in body["problems"])

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq=2")
    result = cli("audit", "verify", code=7)
    assert "records 2..2 are missing (deleted)" in result.stdout


def test_audit_list_filters() -> None:
    cli("experiments", "create", "a")
    cli("projects", "create", "other")
    everything = cli_json("audit", "list")
    assert [r["action"] for r in everything["items"]] == ["project.create", "experiment.create"]
    only = cli_json("audit", "list", "--action", "experiment.*", "--project", "default")
    assert [r["action"] for r in only["items"]] == ["experiment.create"]
    actor = everything["items"][0]["actor"]
    assert len(cli_json("audit", "list", "--actor", actor)["items"]) == 2
    assert cli_json("audit", "list", "--since", "2999-01-01")["items"] == []
    assert len(cli_json("audit", "list", "--until", "2999-01-01T00:00:00+00:00")["items"]) == 2
    page = cli_json("audit", "list", "--max-results", "1")
    assert page["next_page_token"]
    assert "not an ISO 8601 time" in cli("audit", "list", "--since", "yesterday", code=2).output
    assert "max_results" in cli("audit", "list", "--max-results", "0", code=2).stderr


# ---- config, db, server -----------------------------------------------------------------
def test_config_show_masks_secrets(_isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelworks.core.config import get_settings

    monkeypatch.setenv("MODELWORKS_TOKEN", "mw_supersecret")
    get_settings.cache_clear()
    result = cli("config", "show", "--json")
    shown = json.loads(result.stdout)
    assert shown["home"] == str(_isolated_home)
    assert shown["token"] == "***"
    assert "supersecret" not in result.output
    assert "supersecret" not in cli("config", "show").output


def test_db_upgrade_and_current() -> None:
    info = cli_json("db", "upgrade")
    assert info["current"] and info["current"] == info["head"]
    current = cli_json("db", "current")
    assert current["up_to_date"] is True and current["current"] == info["current"]
    assert "latest" in cli("db", "upgrade").stderr


def test_server_bootstraps_an_admin_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import modelworks.server.app

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setattr(modelworks.server.app, "create_app", lambda store=None: "the-app")
    monkeypatch.delenv("MODELWORKS_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("MODELWORKS_ADMIN_USER", "boss")

    result = cli("server", "--port", "9999")
    assert "Created site admin 'boss'" in result.stderr and "Password:" in result.stderr
    assert calls == [{"app": "the-app", "host": "127.0.0.1", "port": 9999, "log_level": "info"}]
    users = cli_json("users", "list")
    assert [(u["username"], u["is_admin"]) for u in users] == [("boss", True)]

    again = cli("server")
    assert "Created site admin" not in again.stderr

    cli("server", "--workers", "2")
    assert calls[-1]["app"] == "modelworks.server.app:create_app" and calls[-1]["workers"] == 2
    cli("server", "--port", "0", code=2)


def test_server_admin_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import modelworks.server.app
    from modelworks.core.config import get_settings
    from modelworks.governance.service import GovernanceService

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.setattr(modelworks.server.app, "create_app", lambda store=None: None)
    monkeypatch.setenv("MODELWORKS_ADMIN_PASSWORD", "short")
    assert "at least 8" in cli("server", code=2).stderr
    assert cli_json("users", "list") == []

    monkeypatch.setenv("MODELWORKS_ADMIN_PASSWORD", "env-password-1")
    result = cli("server")
    assert "Created site admin 'admin'" in result.stderr and "env-password-1" not in result.output
    store = Store(get_settings())
    try:
        assert GovernanceService(store).authenticate_password("admin", "env-password-1").superuser
    finally:
        store.close()
