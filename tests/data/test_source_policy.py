"""Remote callers may not make the server read its own files or connect out with its secrets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from modelworks.core.auth import Principal
from modelworks.core.config import Settings
from modelworks.core.errors import PermissionDenied
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.data.source_policy import upload_root
from modelworks.governance.service import GovernanceService


@pytest.fixture
def people(tmp_path: Path) -> tuple[DataService, dict[str, Principal], Path]:
    allowed = tmp_path / "shared-data"
    allowed.mkdir()
    store = Store(Settings(home=tmp_path / "home", ingest_roots=str(allowed)))
    gov = GovernanceService(store)
    gov.bootstrap_admin("root", "root-password")
    root = gov.authenticate_password("root", "root-password")
    gov.create_project(root, "p")
    out = {"root": root}
    for name in ("editor", "maintainer"):
        gov.create_user(root, name, f"{name}-password")
        gov.set_member(root, "p", name, name)
        out[name] = gov.authenticate_password(name, f"{name}-password")
    return DataService(store), out, allowed


def test_remote_editors_read_files_only_under_the_ingest_roots(
    people: tuple[DataService, dict[str, Principal], Path], tmp_path: Path
) -> None:
    svc, who, allowed = people
    pd.DataFrame({"a": [1, 2]}).to_csv(allowed / "ok.csv", index=False)
    secret_file = tmp_path / "server-only.csv"
    pd.DataFrame({"a": [1]}).to_csv(secret_file, index=False)
    ok = svc.ingest(who["editor"], "p", "d", {"kind": "csv", "path": str(allowed / "ok.csv")})
    assert ok.version is not None and ok.version.row_count == 2
    for path in (str(secret_file), str(allowed / ".." / "server-only.csv"), "/etc/*"):
        with pytest.raises(PermissionDenied, match="MODELWORKS_INGEST_ROOTS"):
            svc.ingest(who["editor"], "p", "d", {"kind": "csv", "path": path})
    # The server's own upload folder is always allowed (the upload endpoint writes there).
    up = Path(upload_root(svc.store.settings)) / "u1"
    up.mkdir(parents=True)
    pd.DataFrame({"a": [5]}).to_csv(up / "x.csv", index=False)
    assert svc.ingest(who["editor"], "p", "d", {"kind": "csv", "path": str(up / "x.csv")}).rows == 1
    # Site admins and the local user are not limited.
    assert svc.ingest(who["root"], "p", "d", {"kind": "csv", "path": str(secret_file)}).rows == 1


def test_connecting_sources_need_a_maintainer_when_remote(
    people: tuple[DataService, dict[str, Principal], Path], tmp_path: Path
) -> None:
    svc, who, _ = people
    import sqlite3

    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1), (2), (3)")
    spec = {"kind": "sql", "url": f"sqlite:///{db}", "table": "t"}
    with pytest.raises(PermissionDenied, match="needs the maintainer role"):
        svc.ingest(who["editor"], "p", "s", spec)
    assert svc.ingest(who["maintainer"], "p", "s", spec).rows == 3
    assert svc.list_datasets(who["editor"], "p").items[0].name == "s"
