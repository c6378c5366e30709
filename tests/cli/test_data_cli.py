"""``modelworks data``: ingest, inspect, validate, transform and trace datasets from the shell."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from modelworks.cli.main import app
from modelworks.data import cli as data_cli

runner = CliRunner()

CHURN = """customer_id,tenure,monthly,plan,churned
1,12,29.5,basic,false
2,3,49.0,pro,true
3,40,19.9,basic,false
4,7,,pro,true
5,25,35.0,team,false
"""


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render at 80 columns when not on a terminal; widen them so cells do not fold."""
    from modelworks.cli import output

    monkeypatch.setattr(output.console, "width", 200)
    monkeypatch.setattr(output.err_console, "width", 200)


def cli(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = runner.invoke(app, list(args), input=stdin)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def cli_json(*args: str, code: int = 0) -> Any:
    return json.loads(cli(*args, "--json", code=code).stdout)


@pytest.fixture
def churn_csv(tmp_path: Path) -> Path:
    path = tmp_path / "churn.csv"
    path.write_text(CHURN)
    return path


@pytest.fixture
def churn(churn_csv: Path) -> dict[str, Any]:
    """The dataset 'churn' with one version ingested from churn.csv."""
    result: dict[str, Any] = cli_json("data", "ingest", "churn", str(churn_csv), "-m", "first")
    return result


# ---- help -------------------------------------------------------------------------------
def _leaves(group: TyperGroup, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, TyperGroup):
            out.extend(_leaves(cmd, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


def test_every_data_command_teaches_with_an_example() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    data = root.commands["data"]
    assert isinstance(data, TyperGroup)
    leaves = _leaves(data, ("data",))
    assert len(leaves) >= 20
    for path in leaves:
        out = cli(*path, "--help").stdout
        assert "Example:" in out, path
        assert f"modelworks {' '.join(path)}" in " ".join(out.split()), path
    assert "data" in cli("--help").stdout


def test_choices_match_the_data_layer() -> None:
    from modelworks.data import schemas, transport

    assert get_args(data_cli.IngestMode) == get_args(schemas.IngestMode)
    assert get_args(data_cli.BadRows) == get_args(schemas.BadRows)
    assert get_args(data_cli.SchemaPolicy) == get_args(schemas.SchemaPolicy)
    assert get_args(data_cli.FileFormat) == transport.FILE_FORMATS
    assert get_args(data_cli.Direction) == get_args(transport.Direction)


# ---- ingest and inspect -----------------------------------------------------------------
def test_ingest_csv_then_list_show_preview_profile(churn_csv: Path) -> None:
    result = cli("data", "ingest", "churn", str(churn_csv), "--message", "January")
    assert "5 rows into churn@1" in result.stderr and "part" in result.stderr
    assert result.stdout == ""

    listed = cli_json("data", "list")
    assert [(d["name"], d["latest_version"]) for d in listed["items"]] == [("churn", 1)]
    assert "churn" in cli("data", "list").stdout

    shown = cli_json("data", "show", "churn")
    assert shown["dataset"]["name"] == "churn"
    assert [v["ref"] for v in shown["versions"]] == ["churn@1"]
    assert shown["versions"][0]["message"] == "January"
    table = cli("data", "show", "churn").stdout
    assert "January" in table and "csv" in table

    version = cli_json("data", "show", "churn@1")
    assert version["row_count"] == 5
    assert [c["name"] for c in version["columns"]] == [
        "customer_id",
        "tenure",
        "monthly",
        "plan",
        "churned",
    ]
    assert version["source"]["kind"] == "csv"
    assert version["source"]["params"]["path"] == str(churn_csv)
    detail = cli("data", "show", "churn@latest").stdout
    assert "customer_id" in detail and "Schema" in detail and str(churn_csv) in detail

    preview = cli_json("data", "preview", "churn", "--limit", "2", "--columns", "plan,tenure")
    assert [c["name"] for c in preview["columns"]] == ["plan", "tenure"]
    assert preview["rows"] == [["basic", 12], ["pro", 3]] and preview["total"] == 5
    shown_rows = cli("data", "preview", "churn@1", "--offset", "3", "-c", "plan")
    assert "team" in shown_rows.stdout and "basic" not in shown_rows.stdout
    assert "Rows 4-5 of 5" in shown_rows.stderr

    prof = cli_json("data", "profile", "churn@1")
    assert prof["row_count"] == 5
    monthly = next(c for c in prof["columns"] if c["name"] == "monthly")
    assert monthly["nulls"] == 1 and monthly["min"] == pytest.approx(19.9)
    assert monthly["max"] == pytest.approx(49.0)
    text = cli("data", "profile", "churn").stdout
    assert "monthly" in text and "20.0%" in text and "49" in text


def test_append_and_schema_policy(churn: dict[str, Any], tmp_path: Path) -> None:
    more = tmp_path / "more.csv"
    more.write_text("customer_id,tenure,monthly,plan,churned\n6,1,9.5,basic,true\n")
    result = cli("data", "ingest", "churn", str(more), "--mode", "append")
    assert "1 row into churn@2" in result.stderr and "6 rows in all" in result.stderr
    assert cli_json("data", "show", "churn@2")["parent_version"] == 1

    cli_json("data", "update", "churn", "--schema-policy", "strict")
    wider = tmp_path / "wider.csv"
    wider.write_text("customer_id,tenure,monthly,plan,churned,region\n1,12,29.5,basic,false,eu\n")
    refused = cli("data", "ingest", "churn", str(wider), code=2)
    assert "added column 'region'" in refused.stderr and "--schema-policy any" in refused.stderr
    assert cli_json("data", "show", "churn")["dataset"]["latest_version"] == 2


def test_refs_tags_and_a_wrong_version_names_the_latest(churn: dict[str, Any]) -> None:
    tagged = cli_json("data", "tag", "churn@1", "golden")
    assert tagged["tags"] == ["golden"]
    assert cli_json("data", "show", "churn@golden")["version"] == 1
    missing = cli("data", "show", "churn@7", code=3)
    assert "has no version 7; latest is 1" in missing.stderr
    assert "churn@latest" in missing.stderr
    assert "tags: golden" in cli("data", "preview", "churn@silver", code=3).stderr
    cli("data", "untag", "churn", "golden")
    assert "no tag 'golden'" in cli("data", "untag", "churn", "golden", code=3).stderr
    assert "does not exist" in cli("data", "show", "nope", code=3).stderr


def test_bad_csv_names_the_line_and_stores_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4\n5,6,7\n8,9\n")
    result = cli("data", "ingest", "broken", str(bad), code=2)
    assert result.stderr.startswith("Error:")
    assert "line 4" in result.stderr or "Line: 4" in result.stderr
    assert "--bad-rows quarantine" in result.stderr
    assert cli_json("data", "list")["items"] == []


def test_bad_rows_quarantine_reports_the_rejects_and_the_side_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4\n5,6,7\n8,9\n")
    result = cli("data", "ingest", "messy", str(bad), "--bad-rows", "quarantine")
    assert "3 rows into messy@1" in result.stderr
    assert "1 bad row set aside" in result.stderr
    side = result.stderr.split("raw line): ", 1)[1].split()[0]
    assert Path(side).is_file() and "5,6,7" in Path(side).read_text()
    body = cli_json("data", "ingest", "messy", str(bad), "--bad-rows", "quarantine")
    assert body["rejects"]["count"] == 1 and body["version"]["row_count"] == 3


def test_ingest_options_are_checked_before_anything_runs(churn_csv: Path, tmp_path: Path) -> None:
    assert "exactly one source" in cli("data", "ingest", "x", code=2).output
    both = cli("data", "ingest", "x", str(churn_csv), "--sql", "sqlite://", code=2)
    assert "several: SOURCE, --sql" in both.output
    assert "--table" in cli("data", "ingest", "x", str(churn_csv), "--table", "t", code=2).output
    assert (
        "exactly one of --table" in cli("data", "ingest", "x", "--sql", "sqlite://", code=2).output
    )
    odd = tmp_path / "data.txt"
    odd.write_text(CHURN)
    assert "--format" in cli("data", "ingest", "x", str(odd), code=2).stderr
    assert cli_json("data", "ingest", "x", str(odd), "--format", "csv")["rows"] == 5
    upsert = cli("data", "ingest", "x", str(odd), "--mode", "upsert", code=2)
    assert "'upsert' is not one of" in upsert.output
    missing = cli("data", "ingest", "y", str(churn_csv), "--no-create", code=3)
    assert "'y' does not exist" in missing.stderr


def test_ingest_from_a_spec_file_and_other_formats(churn_csv: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = tmp_path / "source.yaml"
    spec.write_text(f"kind: csv\npath: {churn_csv}\n")
    assert cli_json("data", "ingest", "from-spec", "--spec", str(spec))["rows"] == 5
    spec.write_text("kind: [unclosed\n")
    assert (
        "is not valid YAML at line 2"
        in cli("data", "ingest", "s", "--spec", str(spec), code=2).stderr
    )
    spec.write_text("path: x.csv\n")
    assert (
        "must be a mapping with a 'kind'"
        in cli("data", "ingest", "s", "--spec", str(spec), code=2).stderr
    )

    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), parquet)
    assert cli_json("data", "ingest", "pq", str(parquet))["version"]["source"]["kind"] == "parquet"
    lines = tmp_path / "t.jsonl"
    lines.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
    assert cli_json("data", "ingest", "js", str(lines))["rows"] == 2

    semi = tmp_path / "semi.csv"
    semi.write_text("1;x\n2;y\n")
    v = cli_json("data", "ingest", "semi", str(semi), "--delimiter", ";", "--no-header")
    assert v["rows"] == 2 and len(v["version"]["columns"]) == 2


# ---- expectations and validation --------------------------------------------------------
def test_expectations_infer_set_validate(churn: dict[str, Any], tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.yaml"
    cli("data", "expectations", "infer", "churn@1", "-o", str(suite_file))
    text = suite_file.read_text()
    assert "customer_id" in text

    cli("data", "expectations", "set", "churn", str(suite_file))
    assert cli_json("data", "show", "churn")["dataset"]["has_expectations"] is True
    assert "customer_id" in cli("data", "expectations", "show", "churn").stdout
    passed = cli_json("data", "validate", "churn@1")
    assert passed["success"] is True and passed["ref"] == "churn@1"
    assert "passed" in cli("data", "validate", "churn").stderr

    # Failing data: the suite stops the ingest, and validating it on its own exits 9.
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,tenure,monthly,plan,churned\n1,-500,29.5,basic,false\n")
    refused = cli("data", "ingest", "churn", str(bad), code=2)
    assert "failed validation" in refused.stderr and "tenure" in refused.stderr
    cli("data", "ingest", "churn-bad", str(bad))
    failed = cli("data", "validate", "churn-bad", "--suite", str(suite_file), code=9)
    assert "✗" in failed.stdout and "tenure" in failed.stdout
    body = cli_json("data", "validate", "churn-bad", "--suite", str(suite_file), code=9)
    assert body["success"] is False

    missing = tmp_path / "missing.yaml"
    gone = cli("data", "expectations", "set", "churn", str(missing), code=2)
    assert "Cannot read the expectation suite" in gone.stderr
    bad_suite = tmp_path / "bad-suite.yaml"
    bad_suite.write_text("expectations:\n  - type: range\n    column: tenure\n")
    invalid = cli("data", "expectations", "set", "churn", str(bad_suite), code=2)
    assert "line 2" in invalid.stderr and "min" in invalid.stderr
    cli("data", "expectations", "clear", "churn")
    assert cli_json("data", "expectations", "show", "churn") == {"suite": None}
    assert "has no expectations" in cli("data", "validate", "churn", code=2).stderr


def _editor(tmp_path: Path, script: str) -> str:
    path = tmp_path / "editor.py"
    path.write_text(f"import sys, pathlib\np = pathlib.Path(sys.argv[1])\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return f"{sys.executable} {path}"


def test_expectations_edit_in_the_editor(
    churn: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    # No suite yet: the editor starts from an inferred one; saving it stores it.
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "p.write_text(p.read_text())"))
    cli("data", "expectations", "edit", "churn")
    assert cli_json("data", "show", "churn")["dataset"]["has_expectations"] is True
    assert "No changes" in cli("data", "expectations", "edit", "churn").stderr

    monkeypatch.setenv("EDITOR", _editor(tmp_path, "p.write_text('expectations: [oops')"))
    broken = cli("data", "expectations", "edit", "churn", code=2)
    assert "Nothing was saved" in broken.stderr and "expectations set churn" in broken.stderr

    monkeypatch.setenv("EDITOR", _editor(tmp_path, "sys.exit(3)"))
    assert "exited with code 3" in cli("data", "expectations", "edit", "churn", code=2).stderr


# ---- transforms, rebuild, lineage -------------------------------------------------------
def test_transform_lineage_and_rebuild(churn: dict[str, Any], tmp_path: Path) -> None:
    made = cli_json(
        "data",
        "transform",
        "--sql",
        'SELECT customer_id, tenure FROM "churn@1" WHERE tenure > 10',
        "--output",
        "long",
    )
    assert made["version"]["ref"] == "long@1" and made["rows"] == 3

    tree = cli("data", "lineage", "long@1").stdout
    assert "churn@1" in tree and "made from" in tree and str(tmp_path) in tree
    graph = cli_json("data", "lineage", "churn@1", "--direction", "down")
    assert "long@1" in {n["label"] for n in graph["nodes"]}
    assert "long@1" in cli("data", "lineage", "churn@1", "--direction", "down").stdout

    same = cli("data", "rebuild", "long@1")
    assert "long@1 rebuilt bit for bit" in same.stderr
    assert cli_json("data", "rebuild", "long@1")["identical"] is True

    sql_file = tmp_path / "q.sql"
    sql_file.write_text('SELECT plan, count(*) AS n FROM "churn@1" GROUP BY plan ORDER BY plan')
    assert cli_json("data", "transform", "--sql-file", str(sql_file), "-o", "plans")["rows"] == 3
    assert "exactly one of --sql" in cli("data", "transform", "-o", "x", code=2).output

    steps = tmp_path / "steps.yaml"
    steps.write_text("- op: drop_nulls\n  columns: [monthly]\n")
    cleaned = cli_json("data", "clean", "churn@1", "--steps", str(steps), "--output", "clean")
    assert cleaned["rows"] == 4


# ---- dataset settings -------------------------------------------------------------------
def test_update_delete_restore(churn: dict[str, Any]) -> None:
    updated = cli_json("data", "update", "churn", "--description", "Monthly export")
    assert updated["description"] == "Monthly export"
    assert "Give --description" in cli("data", "update", "churn", code=2).output
    assert "strict" in cli("data", "update", "churn", "--schema-policy", "strict").stderr
    cli("data", "delete", "churn")
    assert cli_json("data", "list")["items"] == []
    assert "data restore churn" in cli("data", "show", "churn@1", code=3).stderr
    cli("data", "restore", "churn")
    assert cli_json("data", "show", "churn@1")["version"] == 1


def test_project_option_and_setting(churn_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli("projects", "create", "lab")
    cli("data", "ingest", "c", str(churn_csv), "--project", "lab")
    assert cli_json("data", "list")["items"] == []
    assert [d["name"] for d in cli_json("data", "list", "-p", "lab")["items"]] == ["c"]
    from modelworks.core.config import get_settings

    monkeypatch.setenv("MODELWORKS_PROJECT", "lab")
    get_settings.cache_clear()
    assert [d["name"] for d in cli_json("data", "list")["items"]] == ["c"]
    assert "Project 'nope'" in cli("data", "list", "-p", "nope", code=3).stderr


def test_rebuild_that_differs_exits_9(churn: dict[str, Any], _isolated_home: Path) -> None:
    import sqlite3

    cli("data", "transform", "--sql", 'SELECT * FROM "churn@1" WHERE tenure > 10', "-o", "long")
    # Someone edits the stored recipe: the rows it makes are no longer the stored ones.
    with sqlite3.connect(_isolated_home / "modelworks.db") as db:
        db.execute(
            "UPDATE dataset_versions SET recipe = json_set(recipe, '$.sql', "
            "'SELECT * FROM \"churn@1\" WHERE tenure > 20')"
            " WHERE recipe IS NOT NULL"
        )
    differs = cli("data", "rebuild", "long@1", code=9)
    assert "did not rebuild identically" in differs.stderr
    assert cli_json("data", "rebuild", "long@1", code=9)["identical"] is False
    assert "not made by a recipe" in cli("data", "rebuild", "churn@1", code=2).stderr


# ---- other sources ----------------------------------------------------------------------
def test_sql_source_resumes_with_a_cursor_column(tmp_path: Path) -> None:
    import sqlite3

    db_path = tmp_path / "shop.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL)")
        db.executemany("INSERT INTO orders (amount) VALUES (?)", [(10.0,), (25.5,)])
    url = f"sqlite:///{db_path}"
    args = ("data", "ingest", "orders", "--sql", url, "--table", "orders", "--cursor-column", "id")
    first = cli_json(*args)
    assert first["rows"] == 2 and first["version"]["mode"] == "append"  # resuming appends
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO orders (amount) VALUES (99.0)")
    second = cli(*args)
    assert "1 row into orders@2" in second.stderr and "3 rows in all" in second.stderr
    assert cli_json(*args)["version"] is None  # nothing new: no version
    query = cli_json("data", "ingest", "big", "--sql", url, "--query", "SELECT * FROM orders")
    assert query["rows"] == 3 and query["version"]["mode"] == "replace"
    leaked = cli(
        "data", "ingest", "x", "--sql", "postgresql://u:hunter2@db/x", "--table", "t", code=2
    )
    assert "secret" in leaked.stderr and "hunter2" not in leaked.output


def test_http_source_with_records_path_and_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"data": [{"id": 1, "who": {"name": "Ada"}}, {"id": 2}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/orders"
        cli("secrets", "set", "shop_token", "--from-stdin", stdin="s3cr3t-value\n")
        out = cli_json(
            "data",
            "ingest",
            "api",
            "--http",
            url,
            "--records-path",
            "data",
            "--auth-secret",
            "shop_token",
        )
    finally:
        server.shutdown()
    assert out["rows"] == 2
    assert {c["name"] for c in out["version"]["columns"]} >= {"id", "who.name"}
    assert seen == ["Bearer s3cr3t-value"]
    assert "s3cr3t-value" not in json.dumps(out)
    assert "--http" in cli("data", "ingest", "x", "a.csv", "--records-path", "d", code=2).output


@pytest.mark.redis
def test_redis_stream_ingest_and_follow(redis_url: str) -> None:
    import uuid

    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"mw-test-clicks-{uuid.uuid4().hex[:8]}"
    try:
        for i in range(3):
            client.xadd(key, {"page": f"/p{i}", "user": str(i)})
        once = cli_json("data", "ingest", "clicks", "--redis", redis_url, "--stream", key)
        assert once["rows"] == 3 and once["version"]["mode"] == "append"
        for i in range(2):
            client.xadd(key, {"page": f"/q{i}", "user": str(i)})
        followed = cli(
            "data",
            "ingest",
            "clicks",
            "--redis",
            redis_url,
            "--stream",
            key,
            "--follow",
            "--max-batches",
            "1",
            "--interval",
            "0.1",
        )
        assert "2 rows into clicks@2" in followed.stderr
        assert "Stopped (max_batches): 1 batch, 2 rows" in followed.stderr
        assert cli_json("data", "show", "clicks@latest")["row_count"] == 5
    finally:
        client.delete(key)
    no_stream = cli("data", "ingest", "c", "--redis", redis_url, code=2)
    assert "--stream" in no_stream.output
    assert "--follow" in cli("data", "ingest", "c", "x.csv", "--follow", code=2).output


def test_nats_jetstream_ingest(nats_url: str) -> None:
    import asyncio
    import uuid

    import nats

    name = f"mwcli_{uuid.uuid4().hex[:10]}"

    async def on_stream(action: str) -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            if action == "create":
                await js.add_stream(name=name, subjects=[f"{name}.>"])
                for n in range(4):
                    await js.publish(f"{name}.pay", json.dumps({"n": n}).encode())
            else:
                await js.delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(on_stream("create"))
    try:
        out = cli_json("data", "ingest", "payments", "--nats", nats_url, "--stream", name)
    finally:
        asyncio.run(on_stream("delete"))
    assert out["rows"] == 4 and out["version"]["source"]["kind"] == "nats_jetstream"
    assert {"n", "_seq"} <= {c["name"] for c in out["version"]["columns"]}
