"""The data SDK's two transports: embedded (DataService in-process) and remote (REST).

Both implement :class:`DataBackend`: the methods of
:class:`~modelworks.data.service.DataService` (and of the transform service) without the
principal, plus :meth:`DataBackend.ingest_file` for a file on the caller's machine. They
return the same Pydantic objects and raise the same typed errors, so
:mod:`modelworks.data.client` never knows which one it talks to.

Reading is local in both modes: :meth:`DataBackend.read_paths` gives paths of verified
Parquet parts on this machine. Embedded, those are the store's own objects; remote, each part
is downloaded once into ``storage.cache_path`` (checked against its sha256 while it arrives,
then renamed into place) and read from there afterwards.

>>> backend = embedded_data(Store())  # doctest: +SKIP
>>> backend = RemoteData(HttpClient("http://127.0.0.1:8080", token="mw_..."), settings)
... # doctest: +SKIP
>>> backend.get_version("default", "churn@latest").row_count  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import httpx
from pydantic import TypeAdapter

from modelworks.core.errors import CorruptData, InvalidInput, ServiceUnavailable
from modelworks.core.schemas import Page
from modelworks.data.refs import check_dataset_name, check_tag_name, parse_ref
from modelworks.data.schemas import (
    BadRows,
    DatasetOut,
    IngestMode,
    IngestResult,
    LineageOut,
    PartFile,
    PreviewOut,
    Profile,
    RebuildResult,
    SchemaPolicy,
    ValidationRunOut,
    VersionOut,
)
from modelworks.transport import API, DOWNLOAD_CHUNK, HttpClient, _seg

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.core.config import Settings
    from modelworks.core.store import Store
    from modelworks.data.sources.base import Source

FileFormat = Literal["csv", "tsv", "parquet", "json", "excel"]
FILE_FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "json", "excel")
Direction = Literal["up", "down", "both"]

# A local file's format from its name: what ``ingest("data/churn.csv.gz", ...)`` reads it as.
FORMAT_BY_SUFFIX: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".parq": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".xlsx": "excel",
    ".xlsm": "excel",
}
COMPRESSIONS = (".gz", ".zst", ".bz2", ".xz")
_VERSIONS = TypeAdapter(list[VersionOut])
_VALIDATIONS = TypeAdapter(list[ValidationRunOut])


class DataBackend(Protocol):
    """Every data operation, as the SDK sees it: the methods of DataService and of
    TransformService (``sql``, ``clean``, ``rebuild``) minus the principal, plus
    :meth:`ingest_file` for a file on this machine."""

    @property
    def settings(self) -> Settings:
        """This machine's settings: where parts are cached and DuckDB may spill."""
        ...

    # -- datasets
    def create_dataset(
        self,
        project: str,
        name: str,
        description: str = "",
        schema_policy: SchemaPolicy = "additive",
    ) -> DatasetOut: ...

    def get_dataset(self, project: str, name: str) -> DatasetOut: ...

    def list_datasets(
        self,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[DatasetOut]: ...

    def update_dataset(
        self,
        project: str,
        name: str,
        *,
        description: str | None = None,
        schema_policy: SchemaPolicy | None = None,
    ) -> DatasetOut: ...

    def delete_dataset(self, project: str, name: str) -> DatasetOut: ...

    def restore_dataset(self, project: str, name: str) -> DatasetOut: ...

    # -- versions
    def get_version(self, project: str, ref: str, *, with_profile: bool = True) -> VersionOut: ...

    def list_versions(self, project: str, name: str) -> list[VersionOut]: ...

    def tag_version(self, project: str, ref: str, tag: str) -> VersionOut: ...

    def untag(self, project: str, name: str, tag: str) -> DatasetOut: ...

    # -- writing
    def ingest(
        self,
        project: str,
        name: str,
        source: Source | dict[str, Any],
        *,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        create: bool = True,
        message: str = "",
    ) -> IngestResult: ...

    def ingest_file(
        self,
        project: str,
        name: str,
        path: str | os.PathLike[str],
        *,
        format: FileFormat | None = None,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        create: bool = True,
        message: str = "",
    ) -> IngestResult: ...

    # -- reading
    def read_paths(self, project: str, ref: str) -> tuple[VersionOut, list[str]]: ...

    def preview(
        self,
        project: str,
        ref: str,
        *,
        offset: int = 0,
        limit: int = 50,
        columns: Sequence[str] | None = None,
    ) -> PreviewOut: ...

    def profile(self, project: str, ref: str) -> Profile: ...

    # -- expectations and validation
    def get_expectations(self, project: str, name: str) -> dict[str, Any] | None: ...

    def set_expectations(
        self, project: str, name: str, suite: dict[str, Any] | None
    ) -> DatasetOut: ...

    def infer_expectations(self, project: str, ref: str) -> dict[str, Any]: ...

    def validate(
        self, project: str, ref: str, suite: dict[str, Any] | None = None
    ) -> ValidationRunOut: ...

    def list_validations(
        self, project: str, ref: str, *, limit: int = 50
    ) -> list[ValidationRunOut]: ...

    # -- lineage
    def lineage(
        self, project: str, ref: str, *, direction: Direction = "both", depth: int = 10
    ) -> LineageOut: ...

    # -- transforms
    def sql(
        self,
        project: str,
        sql: str,
        output: str,
        *,
        mode: IngestMode = "replace",
        message: str = "",
    ) -> IngestResult: ...

    def clean(
        self,
        project: str,
        ref: str,
        steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        output: str | None = None,
        *,
        message: str = "",
    ) -> IngestResult: ...

    def rebuild(self, project: str, ref: str, *, write: bool = False) -> RebuildResult: ...


def file_format(path: str | os.PathLike[str], given: str | None = None) -> FileFormat:
    """The format to read ``path`` as: ``given``, or what its extension says."""
    if given is not None:
        if given not in FILE_FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FILE_FORMATS)}; got {given!r}.")
        return cast(FileFormat, given)
    name = Path(path).name.lower()
    for ending in COMPRESSIONS:  # churn.csv.gz is a CSV file; DuckDB decompresses it
        name = name.removesuffix(ending)
    suffix = Path(name).suffix
    if suffix not in FORMAT_BY_SUFFIX:
        raise InvalidInput(
            f"Cannot tell the format of {os.fspath(path)!r} from its name (known endings: "
            f"{', '.join(FORMAT_BY_SUFFIX)}); pass format= one of {', '.join(FILE_FORMATS)}."
        )
    return FORMAT_BY_SUFFIX[suffix]


def file_source_spec(path: str | os.PathLike[str], format: FileFormat) -> dict[str, Any]:
    """The file connector's spec for one local file (the source the server uses for uploads)."""
    return {"kind": format, "path": os.fspath(path)}


# ---- embedded ------------------------------------------------------------------------------
class EmbeddedData:
    """DataService (and the transform service) with the principal bound, in this process.

    Each protocol method is the service's method with the principal filled in, so the
    embedded side cannot drift from the services' signatures. The services are built on
    first use: opening a workspace for tracking alone never imports DuckDB.
    """

    def __init__(self, store: Store, principal: Principal) -> None:
        self.store = store
        self.principal = principal

    @property
    def settings(self) -> Settings:
        return self.store.settings

    @functools.cached_property
    def service(self) -> Any:
        from modelworks.data.service import DataService

        return DataService(self.store)

    @functools.cached_property
    def transforms(self) -> Any:
        from modelworks.data.transform_service import TransformService

        return TransformService(self.store)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in _SERVICE_METHODS:
            raise AttributeError(name)
        owner = self.transforms if name in _TRANSFORM_METHODS else self.service
        bound = functools.partial(getattr(owner, name), self.principal)
        setattr(self, name, bound)  # resolve once per name
        return bound

    def ingest_file(
        self,
        project: str,
        name: str,
        path: str | os.PathLike[str],
        *,
        format: FileFormat | None = None,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        create: bool = True,
        message: str = "",
    ) -> IngestResult:
        src = Path(path).expanduser()
        if not src.is_file():
            raise InvalidInput(f"{os.fspath(path)!r} is not a file; give the path of a data file.")
        spec = file_source_spec(src.resolve(), file_format(src, format))
        result: IngestResult = self.service.ingest(
            self.principal, project, name, spec,
            mode=mode, bad_rows=bad_rows, create=create, message=message,
        )  # fmt: skip
        return result


_TRANSFORM_METHODS = frozenset({"sql", "clean", "rebuild"})
_SERVICE_METHODS = frozenset(
    n
    for n, v in vars(DataBackend).items()
    if callable(v) and not n.startswith("_") and n not in {"ingest_file", "settings"}
)


def embedded_data(store: Store, principal: Principal | None = None) -> DataBackend:
    """The data backend on ``store``, acting as ``principal`` (default: the OS user)."""
    from modelworks.core.auth import local_principal

    return cast(DataBackend, EmbeddedData(store, principal or local_principal()))


# ---- remote --------------------------------------------------------------------------------
class RemoteData:
    """The data backend over the REST API of a Modelworks server.

    ``settings`` are this machine's (``MODELWORKS_HOME``): downloaded parts are cached there.
    """

    def __init__(self, http: HttpClient, settings: Settings) -> None:
        self.http = http
        self._settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings

    # -- paths
    def _p(self, project: str) -> str:
        return f"{API}/projects/{_seg(project)}"

    def _ds(self, project: str, name: str) -> str:
        if "/" in name:
            check_dataset_name(name)  # a '/' cannot travel in a path segment: refuse it here
        return f"{self._p(project)}/datasets/{_seg(name)}"

    def _v(self, project: str, ref: str) -> str:
        if "/" in ref:
            parse_ref(ref)  # same as above; names and tags never hold a '/'
        return f"{self._p(project)}/dataset-versions/{_seg(ref)}"

    def _tag(self, tag: str) -> str:
        if "/" in tag:
            check_tag_name(tag)
        return _seg(tag)

    # -- datasets
    def create_dataset(
        self,
        project: str,
        name: str,
        description: str = "",
        schema_policy: SchemaPolicy = "additive",
    ) -> DatasetOut:
        resp = self.http.request(
            "POST",
            f"{self._p(project)}/datasets",
            idempotent=False,
            json_body={"name": name, "description": description, "schema_policy": schema_policy},
        )
        return DatasetOut.model_validate_json(resp.content)

    def get_dataset(self, project: str, name: str) -> DatasetOut:
        resp = self.http.request("GET", self._ds(project, name), idempotent=True)
        return DatasetOut.model_validate_json(resp.content)

    def list_datasets(
        self,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[DatasetOut]:
        params: dict[str, Any] = {"include_deleted": include_deleted, "max_results": max_results}
        if page_token:
            params["page_token"] = page_token
        resp = self.http.request(
            "GET", f"{self._p(project)}/datasets", idempotent=True, params=params
        )
        return Page[DatasetOut].model_validate_json(resp.content)

    def update_dataset(
        self,
        project: str,
        name: str,
        *,
        description: str | None = None,
        schema_policy: SchemaPolicy | None = None,
    ) -> DatasetOut:
        body = {
            k: v
            for k, v in {"description": description, "schema_policy": schema_policy}.items()
            if v is not None
        }
        resp = self.http.request("PATCH", self._ds(project, name), idempotent=True, json_body=body)
        return DatasetOut.model_validate_json(resp.content)

    def delete_dataset(self, project: str, name: str) -> DatasetOut:
        resp = self.http.request("DELETE", self._ds(project, name), idempotent=True)
        return DatasetOut.model_validate_json(resp.content)

    def restore_dataset(self, project: str, name: str) -> DatasetOut:
        resp = self.http.request("POST", self._ds(project, name) + "/restore", idempotent=True)
        return DatasetOut.model_validate_json(resp.content)

    # -- versions
    def get_version(self, project: str, ref: str, *, with_profile: bool = True) -> VersionOut:
        resp = self.http.request(
            "GET",
            self._v(project, ref),
            idempotent=True,
            params={"with_profile": with_profile},
        )
        return VersionOut.model_validate_json(resp.content)

    def list_versions(self, project: str, name: str) -> list[VersionOut]:
        resp = self.http.request("GET", self._ds(project, name) + "/versions", idempotent=True)
        return _VERSIONS.validate_json(resp.content)

    def tag_version(self, project: str, ref: str, tag: str) -> VersionOut:
        resp = self.http.request(
            "PUT", f"{self._v(project, ref)}/tags/{self._tag(tag)}", idempotent=True
        )
        return VersionOut.model_validate_json(resp.content)

    def untag(self, project: str, name: str, tag: str) -> DatasetOut:
        resp = self.http.request(
            "DELETE", f"{self._ds(project, name)}/tags/{self._tag(tag)}", idempotent=True
        )
        return DatasetOut.model_validate_json(resp.content)

    # -- writing
    def ingest(
        self,
        project: str,
        name: str,
        source: Source | dict[str, Any],
        *,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        create: bool = True,
        message: str = "",
    ) -> IngestResult:
        from modelworks.data.sources.frames import FrameSource

        if isinstance(source, FrameSource):
            # Rows in this process's memory cannot travel as a spec: send them as Parquet.
            return self._ingest_frame(
                project, name, source, mode=mode, bad_rows=bad_rows, create=create,
                message=message,
            )  # fmt: skip
        spec = source if isinstance(source, dict) else source.describe()
        resp = self.http.request(
            "POST",
            self._ds(project, name) + "/ingest",
            # Not idempotent: a lost answer may hide a committed version; resending could
            # add a second one (an append would then hold its rows twice).
            idempotent=False,
            json_body={
                "source": spec,
                "mode": mode,
                "bad_rows": bad_rows,
                "create": create,
                "message": message,
            },
        )
        return IngestResult.model_validate_json(resp.content)

    def _ingest_frame(
        self,
        project: str,
        name: str,
        source: Any,
        *,
        mode: IngestMode,
        bad_rows: BadRows,
        create: bool,
        message: str,
    ) -> IngestResult:
        import pyarrow.parquet as pq

        table = source._table
        if table is None:
            raise InvalidInput(
                "This frame source holds no rows any more; ingest the DataFrame itself."
            )
        with tempfile.TemporaryDirectory(prefix="modelworks-upload-") as tmp:
            path = Path(tmp) / f"{source.origin}-frame.parquet"
            pq.write_table(table, path, compression="zstd")
            return self.ingest_file(
                project, name, path, format="parquet", mode=mode, bad_rows=bad_rows,
                create=create, message=message,
            )  # fmt: skip

    def ingest_file(
        self,
        project: str,
        name: str,
        path: str | os.PathLike[str],
        *,
        format: FileFormat | None = None,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        create: bool = True,
        message: str = "",
    ) -> IngestResult:
        src = Path(path).expanduser()
        if not src.is_file():
            raise InvalidInput(f"{os.fspath(path)!r} is not a file; give the path of a data file.")
        resp = self.http.request(
            "POST",
            self._ds(project, name) + "/upload",
            idempotent=False,
            params={
                "format": file_format(src, format),
                "filename": src.name,
                "mode": mode,
                "bad_rows": bad_rows,
                "create": create,
                "message": message,
            },
            # Streamed from disk in chunks; HttpClient closes the file after the request.
            content=lambda: open(src, "rb"),  # noqa: SIM115
            headers={"Content-Type": "application/octet-stream"},
        )
        return IngestResult.model_validate_json(resp.content)

    # -- reading
    def read_paths(self, project: str, ref: str) -> tuple[VersionOut, list[str]]:
        from modelworks.data.storage import cache_path

        version = self.get_version(project, ref, with_profile=False)
        paths = []
        for part in version.files:
            target = cache_path(self.settings, part.sha256)
            if not (target.is_file() and target.stat().st_size == part.size):
                self._download_part(project, version.ref, part, target)
            paths.append(str(target))
        return version, paths

    def _download_part(self, project: str, ref: str, part: PartFile, target: Path) -> None:
        """Fetch one part into the cache: hashed while it arrives, renamed into place only
        when the hash matches, so the cache never holds a partial or damaged part."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        url = f"{self._v(project, ref)}/parts/{part.sha256}"
        try:
            digest = hashlib.sha256()
            with self.http.stream("GET", url) as resp, open(tmp, "wb") as out:
                try:
                    for chunk in resp.iter_bytes(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                except httpx.TransportError as exc:
                    raise ServiceUnavailable(
                        f"The download of a part of {ref} broke off ({exc}); nothing was kept. "
                        "Try again."
                    ) from exc
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != part.sha256:
                raise CorruptData(
                    f"A part of {ref} arrived damaged: its bytes hash to {actual}, not "
                    f"{part.sha256}. Nothing was kept; try again.",
                    sha256=part.sha256,
                )
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def preview(
        self,
        project: str,
        ref: str,
        *,
        offset: int = 0,
        limit: int = 50,
        columns: Sequence[str] | None = None,
    ) -> PreviewOut:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if columns:
            params["columns"] = list(columns)
        resp = self.http.request(
            "GET", self._v(project, ref) + "/preview", idempotent=True, params=params
        )
        return PreviewOut.model_validate_json(resp.content)

    def profile(self, project: str, ref: str) -> Profile:
        resp = self.http.request("GET", self._v(project, ref) + "/profile", idempotent=True)
        return Profile.model_validate_json(resp.content)

    # -- expectations and validation
    def get_expectations(self, project: str, name: str) -> dict[str, Any] | None:
        resp = self.http.request("GET", self._ds(project, name) + "/expectations", idempotent=True)
        suite: dict[str, Any] | None = resp.json()["suite"]
        return suite

    def set_expectations(self, project: str, name: str, suite: dict[str, Any] | None) -> DatasetOut:
        resp = self.http.request(
            "PUT",
            self._ds(project, name) + "/expectations",
            idempotent=True,
            json_body={"suite": suite},
        )
        return DatasetOut.model_validate_json(resp.content)

    def infer_expectations(self, project: str, ref: str) -> dict[str, Any]:
        resp = self.http.request(
            "POST", self._v(project, ref) + "/expectations/infer", idempotent=True
        )
        suite: dict[str, Any] = resp.json()["suite"]
        return suite

    def validate(
        self, project: str, ref: str, suite: dict[str, Any] | None = None
    ) -> ValidationRunOut:
        resp = self.http.request(
            "POST",
            self._v(project, ref) + "/validate",
            idempotent=False,  # each call stores a validation run
            json_body={"suite": suite},
        )
        return ValidationRunOut.model_validate_json(resp.content)

    def list_validations(
        self, project: str, ref: str, *, limit: int = 50
    ) -> list[ValidationRunOut]:
        resp = self.http.request(
            "GET", self._v(project, ref) + "/validations", idempotent=True, params={"limit": limit}
        )
        return _VALIDATIONS.validate_json(resp.content)

    # -- lineage
    def lineage(
        self, project: str, ref: str, *, direction: Direction = "both", depth: int = 10
    ) -> LineageOut:
        resp = self.http.request(
            "GET",
            self._v(project, ref) + "/lineage",
            idempotent=True,
            params={"direction": direction, "depth": depth},
        )
        return LineageOut.model_validate_json(resp.content)

    # -- transforms
    def sql(
        self,
        project: str,
        sql: str,
        output: str,
        *,
        mode: IngestMode = "replace",
        message: str = "",
    ) -> IngestResult:
        resp = self.http.request(
            "POST",
            f"{self._p(project)}/transforms/sql",
            idempotent=False,
            json_body={"sql": sql, "output": output, "mode": mode, "message": message},
        )
        return IngestResult.model_validate_json(resp.content)

    def clean(
        self,
        project: str,
        ref: str,
        steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        output: str | None = None,
        *,
        message: str = "",
    ) -> IngestResult:
        body_steps: Any = dict(steps) if isinstance(steps, Mapping) else [dict(s) for s in steps]
        resp = self.http.request(
            "POST",
            f"{self._p(project)}/transforms/clean",
            idempotent=False,
            json_body={"ref": ref, "steps": body_steps, "output": output, "message": message},
        )
        return IngestResult.model_validate_json(resp.content)

    def rebuild(self, project: str, ref: str, *, write: bool = False) -> RebuildResult:
        resp = self.http.request(
            "POST",
            self._v(project, ref) + "/rebuild",
            idempotent=not write,
            json_body={"write": write},
        )
        return RebuildResult.model_validate_json(resp.content)


if TYPE_CHECKING:
    # mypy proves here that both transports implement the whole protocol.
    def _conforms(embedded: EmbeddedData, remote: RemoteData) -> list[DataBackend]:
        return [embedded, remote]
