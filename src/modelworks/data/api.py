"""REST routes for datasets: thin adapters over DataService and TransformService.

A dataset version is addressed by its reference in one path segment,
``/projects/{project}/dataset-versions/{ref}`` with ``ref`` = ``churn@3``, ``churn@latest``,
``churn@golden`` or ``churn`` (the latest ready version), URL-encoded by clients (``@`` may
travel as ``%40``). Dataset names and tags never hold ``/``, so a reference always fits.
"""

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput, NotFound
from modelworks.core.schemas import Page
from modelworks.data import storage
from modelworks.data.schemas import (
    BadRows,
    DatasetOut,
    IngestMode,
    IngestResult,
    LineageOut,
    PreviewOut,
    Profile,
    RebuildResult,
    SchemaPolicy,
    ValidationRunOut,
    VersionOut,
)
from modelworks.data.service import DataService
from modelworks.data.source_policy import upload_root
from modelworks.data.transform_service import TransformService
from modelworks.data.transport import FILE_FORMATS, FileFormat, file_format, file_source_spec
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal

router = APIRouter(prefix="/api/v1", tags=["data"])
P = "/projects/{project}"
D = P + "/datasets/{dataset}"
V = P + "/dataset-versions/{ref}"
UPLOAD_PATH = r"/api/v1/projects/[^/]+/datasets/[^/]+/upload"  # gets the artifact size limit
PARQUET = "application/vnd.apache.parquet"
# Media types that say what an upload is when neither ?format= nor a file name does.
FORMAT_BY_MEDIA_TYPE: dict[str, FileFormat] = {
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    PARQUET: "parquet",
    "application/x-parquet": "parquet",
    "application/json": "json",
    "application/x-ndjson": "json",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "excel",
}
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def data(request: Request) -> DataService:
    svc: DataService = request.app.state.data
    return svc


def transforms(request: Request) -> TransformService:
    svc: TransformService = request.app.state.transforms
    return svc


# ---- request bodies (REST-only shapes; the service takes plain arguments) -------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored


class DatasetCreate(_Body):
    name: str
    description: str = ""
    schema_policy: SchemaPolicy = "additive"


class DatasetUpdate(_Body):
    description: str | None = None
    schema_policy: SchemaPolicy | None = None


class IngestRequest(_Body):
    source: dict[str, Any] = Field(
        description='The source spec, e.g. {"kind": "csv", "path": "/data/churn.csv"}; paths '
        "are read and ${secret:NAME} references resolved on the server."
    )
    mode: IngestMode = "replace"
    bad_rows: BadRows = "fail"
    create: bool = True
    message: str = ""


class SuiteBody(_Body):
    suite: dict[str, Any] | None = None


class SqlTransform(_Body):
    sql: str
    output: str
    mode: IngestMode = "replace"
    message: str = ""


class CleanTransform(_Body):
    ref: str
    steps: list[dict[str, Any]] | dict[str, Any] = Field(
        description='Cleaning steps, e.g. [{"op": "deduplicate"}], or {"steps": [...]}'
    )
    output: str | None = None
    message: str = ""


class RebuildRequest(_Body):
    write: bool = False


# ---- datasets ------------------------------------------------------------------------------
@router.get(P + "/datasets", response_model=Page[DatasetOut], **auth_rule(Role.VIEWER))
def list_datasets(
    project: str,
    include_deleted: bool = False,
    max_results: int = Query(100, ge=1, le=10_000),
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> Page[DatasetOut]:
    return svc.list_datasets(
        principal,
        project,
        include_deleted=include_deleted,
        max_results=max_results,
        page_token=page_token,
    )


@router.post(P + "/datasets", status_code=201, response_model=DatasetOut, **auth_rule(Role.EDITOR))
def create_dataset(
    project: str,
    body: DatasetCreate,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> DatasetOut:
    return svc.create_dataset(principal, project, body.name, body.description, body.schema_policy)


@router.get(D, response_model=DatasetOut, **auth_rule(Role.VIEWER))
def get_dataset(
    project: str,
    dataset: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> DatasetOut:
    return svc.get_dataset(principal, project, dataset)


@router.patch(D, response_model=DatasetOut, **auth_rule(Role.EDITOR))
def update_dataset(
    project: str,
    dataset: str,
    body: DatasetUpdate,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> DatasetOut:
    return svc.update_dataset(
        principal,
        project,
        dataset,
        description=body.description,
        schema_policy=body.schema_policy,
    )


@router.delete(D, response_model=DatasetOut, **auth_rule(Role.MAINTAINER))
def delete_dataset(
    project: str,
    dataset: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> DatasetOut:
    """Soft delete: the dataset is hidden; its versions and bytes are kept."""
    return svc.delete_dataset(principal, project, dataset)


@router.post(D + "/restore", response_model=DatasetOut, **auth_rule(Role.MAINTAINER))
def restore_dataset(
    project: str,
    dataset: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> DatasetOut:
    return svc.restore_dataset(principal, project, dataset)


@router.get(D + "/versions", response_model=list[VersionOut], **auth_rule(Role.VIEWER))
def list_versions(
    project: str,
    dataset: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> list[VersionOut]:
    """Every version, newest first, without profiles (GET the version for its profile)."""
    return svc.list_versions(principal, project, dataset)


@router.delete(D + "/tags/{tag}", response_model=DatasetOut, **auth_rule(Role.EDITOR))
def untag(
    project: str,
    dataset: str,
    tag: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> DatasetOut:
    return svc.untag(principal, project, dataset, tag)


# ---- writing versions ----------------------------------------------------------------------
@router.post(D + "/ingest", response_model=IngestResult, **auth_rule(Role.EDITOR))
def ingest(
    project: str,
    dataset: str,
    body: IngestRequest,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> IngestResult:
    """Read a source into a new version. ``version`` is null when there was nothing new."""
    return svc.ingest(
        principal, project, dataset, body.source, mode=body.mode, bad_rows=body.bad_rows,
        create=body.create, message=body.message,
    )  # fmt: skip


@router.post(D + "/upload", response_model=IngestResult, **auth_rule(Role.EDITOR))
async def upload(
    project: str,
    dataset: str,
    request: Request,
    fmt: FileFormat | None = Query(
        None,
        alias="format",
        description="csv, tsv, parquet, json or excel; default: from the file name or type",
    ),
    filename: str | None = Query(None, description="The file's name (kept with the version)"),
    mode: IngestMode = "replace",
    bad_rows: BadRows = "fail",
    create: bool = True,
    message: str = "",
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> IngestResult:
    """Ingest a file sent as the raw body, or as the part ``file`` of a multipart form.

    The body is streamed to a private folder on the server (never held in memory), read
    with the file source for its format, and removed afterwards. Bodies are limited by
    ``MODELWORKS_MAX_ARTIFACT_BYTES``.
    """
    from starlette.concurrency import run_in_threadpool

    folder = _upload_folder(svc)
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            path, fmt = await _save_form_file(request, folder, fmt, filename)
        else:
            fmt = fmt or _format_of(filename, request.headers.get("content-type"))
            path = folder / _safe_name(filename, fmt)
            with open(path, "wb") as out:
                async for chunk in request.stream():
                    await run_in_threadpool(out.write, chunk)
        spec = file_source_spec(path, fmt)
        result: IngestResult = await run_in_threadpool(
            svc.ingest, principal, project, dataset, spec, mode=mode, bad_rows=bad_rows,
            create=create, message=message,
        )  # fmt: skip
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _upload_folder(svc: DataService) -> Path:
    # Under HOME, not /tmp: uploads may be as large as an artifact, and /tmp is often small.
    base = Path(upload_root(svc.store.settings))
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="upload-", dir=base))


async def _save_form_file(
    request: Request, folder: Path, fmt: FileFormat | None, filename: str | None
) -> tuple[Path, FileFormat]:
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile

    form = await request.form()
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise InvalidInput(
                "A multipart upload needs the file in a part named 'file', e.g. "
                "curl -F file=@churn.csv ..."
            )
        name = filename or part.filename
        fmt = fmt or _format_of(name, part.content_type)
        path = folder / _safe_name(name, fmt)
        with open(path, "wb") as out:
            await run_in_threadpool(shutil.copyfileobj, part.file, out, 1024 * 1024)
        return path, fmt
    finally:
        await form.close()


def _format_of(filename: str | None, media_type: str | None) -> FileFormat:
    if filename:
        return file_format(filename)
    media = (media_type or "").split(";", 1)[0].strip().lower()
    if media in FORMAT_BY_MEDIA_TYPE:
        return FORMAT_BY_MEDIA_TYPE[media]
    raise InvalidInput(
        f"Say what the upload holds: add ?format= one of {', '.join(FILE_FORMATS)}, or "
        "?filename= with the file's name (e.g. churn.csv)."
    )


def _safe_name(filename: str | None, fmt: FileFormat) -> str:
    """The uploaded file's own name (it is shown with the version), reduced to a plain
    name that cannot leave the upload folder."""
    base = _UNSAFE_NAME.sub("_", Path(filename or "").name).strip("._")
    return base or f"upload.{fmt}"


# ---- one version ---------------------------------------------------------------------------
@router.get(V, response_model=VersionOut, **auth_rule(Role.VIEWER))
def get_version(
    project: str,
    ref: str,
    with_profile: bool = True,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> VersionOut:
    return svc.get_version(principal, project, ref, with_profile=with_profile)


@router.put(V + "/tags/{tag}", response_model=VersionOut, **auth_rule(Role.EDITOR))
def tag_version(
    project: str,
    ref: str,
    tag: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> VersionOut:
    """Point ``tag`` at this version (moving it if it pointed at another)."""
    return svc.tag_version(principal, project, ref, tag)


@router.get(V + "/preview", response_model=PreviewOut, **auth_rule(Role.VIEWER))
def preview(
    project: str,
    ref: str,
    offset: int = 0,
    limit: int = 50,
    columns: list[str] | None = Query(None, description="Repeat for each column to show"),
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> PreviewOut:
    return svc.preview(principal, project, ref, offset=offset, limit=limit, columns=columns)


@router.get(V + "/profile", response_model=Profile, **auth_rule(Role.VIEWER))
def profile(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> Profile:
    return svc.profile(principal, project, ref)


@router.get(V + "/parts/{sha256}", response_class=FileResponse, **auth_rule(Role.VIEWER))
def download_part(
    project: str,
    ref: str,
    sha256: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> FileResponse:
    """One Parquet part of the version, verified against its sha256 (sent as the ETag)."""
    version = svc.get_version(principal, project, ref, with_profile=False)
    # Only a part of the version the caller may read: a checksum alone opens nothing.
    part = next((f for f in version.files if f.sha256 == sha256), None)
    if part is None:
        raise NotFound(
            f"{version.ref} has no part {sha256}; its parts are the 'files' of "
            f"GET /api/v1/projects/{project}/dataset-versions/{version.ref}."
        )
    path = storage.readable_paths(svc.store.artifacts, svc.store.settings, [part])[0]
    return FileResponse(
        path,
        media_type=PARQUET,
        filename=f"{version.dataset}-{version.version}-{sha256[:12]}.parquet",
        headers={"ETag": f'"{sha256}"', "X-Content-Type-Options": "nosniff"},
    )


# ---- expectations and validation -----------------------------------------------------------
@router.get(D + "/expectations", response_model=SuiteBody, **auth_rule(Role.VIEWER))
def get_expectations(
    project: str,
    dataset: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> SuiteBody:
    """The dataset's expectation suite (``suite`` is null when it has none)."""
    return SuiteBody(suite=svc.get_expectations(principal, project, dataset))


@router.put(D + "/expectations", response_model=DatasetOut, **auth_rule(Role.EDITOR))
def set_expectations(
    project: str,
    dataset: str,
    body: SuiteBody,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> DatasetOut:
    """Store the suite every ingest runs; ``{"suite": null}`` removes it."""
    return svc.set_expectations(principal, project, dataset, body.suite)


@router.post(V + "/expectations/infer", response_model=SuiteBody, **auth_rule(Role.VIEWER))
def infer_expectations(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> SuiteBody:
    """A suite inferred from the version's profile; nothing is stored."""
    return SuiteBody(suite=svc.infer_expectations(principal, project, ref))


@router.post(V + "/validate", response_model=ValidationRunOut, **auth_rule(Role.EDITOR))
def validate(
    project: str,
    ref: str,
    body: SuiteBody | None = None,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> ValidationRunOut:
    """Run a suite (default: the dataset's own) on the version and store the result."""
    return svc.validate(principal, project, ref, body.suite if body else None)


@router.get(V + "/validations", response_model=list[ValidationRunOut], **auth_rule(Role.VIEWER))
def list_validations(
    project: str,
    ref: str,
    limit: int = Query(50, ge=1, le=1000),
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> list[ValidationRunOut]:
    return svc.list_validations(principal, project, ref, limit=limit)


# ---- lineage -------------------------------------------------------------------------------
@router.get(V + "/lineage", response_model=LineageOut, **auth_rule(Role.VIEWER))
def lineage(
    project: str,
    ref: str,
    direction: Literal["up", "down", "both"] = "both",
    depth: int = Query(10, ge=0, le=50),
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data),
) -> LineageOut:
    return svc.lineage(principal, project, ref, direction=direction, depth=depth)


# ---- transforms ----------------------------------------------------------------------------
@router.post(P + "/transforms/sql", response_model=IngestResult, **auth_rule(Role.EDITOR))
def transform_sql(
    project: str,
    body: SqlTransform,
    principal: Principal = Depends(current_principal),
    svc: TransformService = Depends(transforms),
) -> IngestResult:
    """A new version of ``output`` from one DuckDB SELECT over ``"name@selector"`` refs; the
    query and the exact versions it read are stored as the version's recipe."""
    return svc.sql(principal, project, body.sql, body.output, message=body.message, mode=body.mode)


@router.post(P + "/transforms/clean", response_model=IngestResult, **auth_rule(Role.EDITOR))
def transform_clean(
    project: str,
    body: CleanTransform,
    principal: Principal = Depends(current_principal),
    svc: TransformService = Depends(transforms),
) -> IngestResult:
    """Cleaning steps applied to ``ref``, written to ``output`` (default: ``ref``'s dataset)."""
    return svc.clean(principal, project, body.ref, body.steps, body.output, message=body.message)


@router.post(V + "/rebuild", response_model=RebuildResult, **auth_rule(Role.VIEWER))
def rebuild(
    project: str,
    ref: str,
    body: RebuildRequest | None = None,
    principal: Principal = Depends(current_principal),
    svc: TransformService = Depends(transforms),
) -> RebuildResult:
    """Run the version's recipe again and compare the bytes. Checking needs a viewer;
    ``{"write": true}`` also stores the rebuilt rows as a new version and needs an editor."""
    return svc.rebuild(principal, project, ref, write=body.write if body else False)
