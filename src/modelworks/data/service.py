"""Dataset service: the one implementation of every dataset rule.

REST, CLI, SDK and UI call these methods. An ingest runs in two phases so that the
database is never locked while data is read and written:

1. outside any transaction, the source is scanned and written by DuckDB to Parquet parts in
   a staging folder, which are schema-checked, profiled, validated and then adopted into the
   content-addressed artifact store (invisible until referenced);
2. one short transaction re-checks what phase 1 assumed (the previous version, the stored
   source position), then inserts the version row, moves the source cursor, records lineage
   and the audit record together.

A crash anywhere before the commit leaves the previous versions and the source position as
they were; at worst an unreferenced object remains in the artifact store.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelworks.core import audit, lineage
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import AlreadyExists, Conflict, InvalidInput, ModelworksError, NotFound
from modelworks.core.ids import new_id, utcnow
from modelworks.core.schemas import Page, check_page_size, decode_page_token, encode_page_token
from modelworks.core.secrets import redact
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.models import (
    SCHEMA_POLICIES,
    Dataset,
    DatasetTag,
    DatasetVersion,
    SourceCursor,
    ValidationRun,
)
from modelworks.data.refs import DatasetRef, check_dataset_name, check_tag_name, parse_ref
from modelworks.data.schema_policy import check_policy, diff_columns
from modelworks.data.schemas import (
    BadRows,
    ColumnSchema,
    DatasetOut,
    IngestMode,
    IngestResult,
    LineageEdgeOut,
    LineageNodeOut,
    LineageOut,
    PartFile,
    PreviewOut,
    Profile,
    RejectsOut,
    SchemaChanges,
    SchemaPolicy,
    ValidationReport,
    ValidationRunOut,
    VersionOut,
)
from modelworks.data.source_policy import check_source_allowed
from modelworks.data.sources.base import (
    Rejects,
    ScanContext,
    Source,
    source_from_spec,
    write_scan,
)
from modelworks.governance.access import require_project
from modelworks.governance.models import Project

MAX_PREVIEW_ROWS = 1000


@dataclass(frozen=True)
class _Base:
    """What phase 1 read and phase 2 re-checks."""

    project_id: str
    dataset_id: str | None
    latest: int | None
    files: list[dict[str, Any]]
    columns: list[dict[str, Any]]
    policy: str
    suite: dict[str, Any] | None
    cursor: dict[str, Any] | None


def dataset_out(ds: Dataset) -> DatasetOut:
    return DatasetOut(
        id=ds.id,
        project_id=ds.project_id,
        name=ds.name,
        description=ds.description,
        schema_policy=ds.schema_policy,
        latest_version=ds.latest_version or None,
        version_count=ds.version_count,
        has_expectations=ds.expectations is not None,
        created_by=ds.created_by,
        created_at=ds.created_at,
        updated_at=ds.updated_at,
        deleted=ds.deleted_at is not None,
    )


def version_out(
    ds: Dataset, v: DatasetVersion, tags: Sequence[str] = (), *, with_profile: bool = True
) -> VersionOut:
    return VersionOut(
        id=v.id,
        dataset_id=ds.id,
        dataset=ds.name,
        project_id=v.project_id,
        version=v.version,
        ref=f"{ds.name}@{v.version}",
        status=v.status,
        mode=v.mode,
        parent_version=v.parent_version,
        files=[PartFile.model_validate(f) for f in v.files],
        columns=[ColumnSchema.model_validate(c) for c in v.columns],
        row_count=v.row_count,
        size_bytes=v.size_bytes,
        content_hash=v.content_hash,
        source=v.source,
        recipe=v.recipe,
        schema_changes=SchemaChanges.model_validate(v.schema_changes or {}),
        tags=sorted(tags),
        profile=Profile.model_validate(v.profile) if (with_profile and v.profile) else None,
        rejects=RejectsOut.model_validate(v.rejects) if v.rejects else None,
        validation_success=v.validation_success,
        message=v.message,
        created_by=v.created_by,
        created_at=v.created_at,
    )


def version_node(name: str, v: DatasetVersion | VersionOut) -> lineage.Node:
    return lineage.Node("dataset_version", v.id, f"{name}@{v.version}")


def source_node(source: Source) -> lineage.Node:
    return lineage.Node("source", f"{source.kind}:{source.source_key}", source.label())


class DataService:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- datasets ----------------------------------------------------------------------
    def _dataset(
        self, s: Session, project: Project, name: str, *, include_deleted: bool = False
    ) -> Dataset:
        ds = s.scalar(select(Dataset).where(Dataset.project_id == project.id, Dataset.name == name))
        if ds is None or (ds.deleted_at is not None and not include_deleted):
            hint = (
                f" It was deleted; restore it with `modelworks data restore {name}`."
                if ds is not None
                else " List datasets with `modelworks data list`, or ingest one with "
                "`modelworks data ingest`."
            )
            raise NotFound(f"Dataset {name!r} does not exist in project {project.name!r}.{hint}")
        return ds

    def create_dataset(
        self,
        principal: Principal,
        project: str,
        name: str,
        description: str = "",
        schema_policy: SchemaPolicy = "additive",
    ) -> DatasetOut:
        check_dataset_name(name)
        _check_policy_name(schema_policy)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Creating a dataset")
            ds = self._create(s, principal, proj, name, description, schema_policy)
            return dataset_out(ds)

    def _create(
        self,
        s: Session,
        principal: Principal,
        proj: Project,
        name: str,
        description: str,
        schema_policy: str,
    ) -> Dataset:
        existing = s.scalar(
            select(Dataset).where(Dataset.project_id == proj.id, Dataset.name == name)
        )
        if existing is not None:
            state = " (deleted; restore it or pick another name)" if existing.deleted_at else ""
            raise AlreadyExists(f"Dataset {name!r} already exists in project {proj.name!r}{state}.")
        now = utcnow()
        ds = Dataset(
            id=new_id(),
            project_id=proj.id,
            name=name,
            description=description,
            schema_policy=schema_policy,
            latest_version=0,
            version_count=0,
            created_by=principal.actor,
            created_at=now,
            updated_at=now,
        )
        s.add(ds)
        try:
            with s.begin_nested():
                s.flush()
        except IntegrityError:
            raise AlreadyExists(f"Dataset {name!r} already exists in project {proj.name!r}.")
        audit.record(
            s,
            principal,
            "dataset.create",
            "dataset",
            ds.id,
            project_id=proj.id,
            changes={"name": name, "schema_policy": schema_policy},
        )
        return ds

    def get_dataset(self, principal: Principal, project: str, name: str) -> DatasetOut:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading datasets")
            return dataset_out(self._dataset(s, proj, name, include_deleted=True))

    def list_datasets(
        self,
        principal: Principal,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[DatasetOut]:
        check_page_size(max_results)
        offset = decode_page_token(page_token)
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Listing datasets")
            stmt = select(Dataset).where(Dataset.project_id == proj.id)
            if not include_deleted:
                stmt = stmt.where(Dataset.deleted_at.is_(None))
            rows = s.scalars(
                stmt.order_by(Dataset.updated_at.desc(), Dataset.id.desc())
                .offset(offset)
                .limit(max_results + 1)
            ).all()
            items = [dataset_out(d) for d in rows[:max_results]]
            token = encode_page_token(offset + max_results) if len(rows) > max_results else None
            return Page[DatasetOut](items=items, next_page_token=token)

    def update_dataset(
        self,
        principal: Principal,
        project: str,
        name: str,
        *,
        description: str | None = None,
        schema_policy: SchemaPolicy | None = None,
    ) -> DatasetOut:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Changing a dataset")
            ds = self._dataset(s, proj, name)
            changes: dict[str, Any] = {}
            if description is not None and description != ds.description:
                changes["description"] = description
                ds.description = description
            if schema_policy is not None and schema_policy != ds.schema_policy:
                _check_policy_name(schema_policy)
                changes["schema_policy"] = {"from": ds.schema_policy, "to": schema_policy}
                ds.schema_policy = schema_policy
            if changes:
                ds.updated_at = utcnow()
                audit.record(
                    s, principal, "dataset.update", "dataset", ds.id, project_id=proj.id,
                    changes=changes,
                )  # fmt: skip
            return dataset_out(ds)

    def delete_dataset(self, principal: Principal, project: str, name: str) -> DatasetOut:
        """Soft delete: hidden from lists and refs; versions and bytes are kept."""
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Deleting a dataset")
            ds = self._dataset(s, proj, name)
            ds.deleted_at = utcnow()
            audit.record(s, principal, "dataset.delete", "dataset", ds.id, project_id=proj.id)
            return dataset_out(ds)

    def restore_dataset(self, principal: Principal, project: str, name: str) -> DatasetOut:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Restoring a dataset")
            ds = self._dataset(s, proj, name, include_deleted=True)
            if ds.deleted_at is not None:
                ds.deleted_at = None
                audit.record(s, principal, "dataset.restore", "dataset", ds.id, project_id=proj.id)
            return dataset_out(ds)

    # ---- versions ----------------------------------------------------------------------
    def _tags_of(self, s: Session, ds: Dataset, version: int | None = None) -> list[str]:
        stmt = select(DatasetTag.name).where(DatasetTag.dataset_id == ds.id)
        if version is not None:
            stmt = stmt.where(DatasetTag.version == version)
        return list(s.scalars(stmt).all())

    def _resolve(
        self, s: Session, proj: Project, ref: str | DatasetRef
    ) -> tuple[Dataset, DatasetVersion]:
        r = parse_ref(ref) if isinstance(ref, str) else ref
        ds = self._dataset(s, proj, r.name)
        number = r.number
        if r.selector == "latest":
            if not ds.latest_version:
                what = (
                    f"only quarantined versions (1-{ds.version_count}); inspect them with "
                    f"{r.name}@N"
                    if ds.version_count
                    else "no versions yet; ingest data with `modelworks data ingest`"
                )
                raise NotFound(f"Dataset {r.name!r} has {what}.")
            number = ds.latest_version
        elif number is None:
            number = s.scalar(
                select(DatasetTag.version).where(
                    DatasetTag.dataset_id == ds.id, DatasetTag.name == r.selector
                )
            )
            if number is None:
                tags = ", ".join(sorted(self._tags_of(s, ds))) or "none"
                raise NotFound(
                    f"Dataset {r.name!r} has no tag {r.selector!r} (tags: {tags}). Use "
                    f"{r.name}@latest or a version number."
                )
        v = s.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == ds.id, DatasetVersion.version == number
            )
        )
        if v is None:
            latest = ds.latest_version
            hint = (
                f"latest is {latest}. Use {r.name}@latest or {r.name}@{latest}."
                if latest
                else "it has no ready versions yet."
            )
            raise NotFound(f"Dataset {r.name!r} has no version {number}; {hint}")
        return ds, v

    def get_version(
        self, principal: Principal, project: str, ref: str, *, with_profile: bool = True
    ) -> VersionOut:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading datasets")
            ds, v = self._resolve(s, proj, ref)
            return version_out(ds, v, self._tags_of(s, ds, v.version), with_profile=with_profile)

    def list_versions(self, principal: Principal, project: str, name: str) -> list[VersionOut]:
        """Every version, newest first, without profiles (fetch one with get_version)."""
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading datasets")
            ds = self._dataset(s, proj, name, include_deleted=True)
            tags: dict[int, list[str]] = {}
            for t in s.scalars(select(DatasetTag).where(DatasetTag.dataset_id == ds.id)):
                tags.setdefault(t.version, []).append(t.name)
            rows = s.scalars(
                select(DatasetVersion)
                .where(DatasetVersion.dataset_id == ds.id)
                .order_by(DatasetVersion.version.desc())
            ).all()
            return [version_out(ds, v, tags.get(v.version, ()), with_profile=False) for v in rows]

    def tag_version(self, principal: Principal, project: str, ref: str, tag: str) -> VersionOut:
        """Point ``tag`` at the version ``ref`` names (moving it if it pointed elsewhere)."""
        check_tag_name(tag)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Tagging a version")
            ds, v = self._resolve(s, proj, ref)
            row = s.scalar(
                select(DatasetTag).where(DatasetTag.dataset_id == ds.id, DatasetTag.name == tag)
            )
            moved_from = row.version if row is not None else None
            if row is None:
                s.add(
                    DatasetTag(
                        id=new_id(),
                        dataset_id=ds.id,
                        name=tag,
                        version=v.version,
                        created_by=principal.actor,
                        created_at=utcnow(),
                    )
                )
            else:
                row.version = v.version
            audit.record(
                s, principal, "dataset.tag", "dataset_version", v.id, project_id=proj.id,
                changes={"tag": tag, "version": v.version, "moved_from": moved_from},
            )  # fmt: skip
            s.flush()
            return version_out(ds, v, self._tags_of(s, ds, v.version))

    def untag(self, principal: Principal, project: str, name: str, tag: str) -> DatasetOut:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Removing a tag")
            ds = self._dataset(s, proj, name)
            row = s.scalar(
                select(DatasetTag).where(DatasetTag.dataset_id == ds.id, DatasetTag.name == tag)
            )
            if row is None:
                raise NotFound(f"Dataset {name!r} has no tag {tag!r}.")
            s.delete(row)
            audit.record(
                s, principal, "dataset.untag", "dataset", ds.id, project_id=proj.id,
                changes={"tag": tag, "version": row.version},
            )  # fmt: skip
            return dataset_out(ds)

    # ---- writing versions --------------------------------------------------------------
    def ingest(
        self,
        principal: Principal,
        project: str,
        name: str,
        source: Source | dict[str, Any],
        *,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        create: bool = True,
        message: str = "",
    ) -> IngestResult:
        """Read ``source`` into a new immutable version of dataset ``name``.

        ``mode="append"`` makes a version holding the previous version's rows plus the new
        ones (its parts are shared, not copied); resumable sources (incremental SQL, streams)
        must append. Returns a result whose ``version`` is None when there was nothing new.
        """
        src = source_from_spec(source)
        return self.write_version(
            principal, project, name, src, mode=mode, bad_rows=bad_rows, create=create,
            message=message,
        )  # fmt: skip

    def write_version(
        self,
        principal: Principal,
        project: str,
        name: str,
        source: Source,
        *,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        create: bool = True,
        message: str = "",
        parents: Sequence[VersionOut] = (),
        recipe: dict[str, Any] | None = None,
        relation: str = "ingested_from",
        threads: int | None = None,
    ) -> IngestResult:
        """The one way a version is made: ingests, transforms and rebuilds all come here.

        ``parents`` are the dataset versions the rows were derived from (lineage edges
        ``derived_from``), ``recipe`` how to make them again, ``threads=1`` a deterministic
        run for recipes that must rebuild bit for bit.
        """
        check_dataset_name(name)
        if mode not in ("replace", "append"):
            raise InvalidInput(f"mode must be 'replace' or 'append'; got {mode!r}.")
        if bad_rows not in ("fail", "quarantine"):
            raise InvalidInput(f"bad_rows must be 'fail' or 'quarantine'; got {bad_rows!r}.")
        if source.resumable and mode != "append":
            raise InvalidInput(
                f"The {source.kind} source resumes where the previous ingest stopped, so each "
                "ingest adds rows: use mode='append' (CLI: --mode append)."
            )
        started = time.perf_counter()
        base = self._read_base(principal, project, name, source, create=create)
        settings = self.store.settings
        artifacts = self.store.artifacts
        stage = artifacts.staging_dir()
        con = storage.connect(settings, threads=threads)
        hashes: storage.BackgroundHashes | None = None
        try:
            ctx = ScanContext(
                con=con,
                settings=settings,
                workdir=stage / "scratch",
                cursor=base.cursor,
                bad_rows=bad_rows,
            )
            ctx.workdir.mkdir(parents=True, exist_ok=True)
            parts, rejects, scan_message, new_cursor = self._scan_and_write(source, ctx, stage)
            if parts is None:
                self._advance_cursor(principal, project, name, source, base, new_cursor)
                return IngestResult(
                    version=None,
                    rows=0,
                    seconds=time.perf_counter() - started,
                    message=scan_message or f"Nothing new from {source.label()}.",
                )
            new_rows = sum(storage.part_rows(p) for p in parts)
            if new_rows == 0 and source.resumable:
                self._advance_cursor(principal, project, name, source, base, new_cursor)
                return IngestResult(
                    version=None,
                    rows=0,
                    rejects=_rejects_out(rejects, None),
                    seconds=time.perf_counter() - started,
                    message=scan_message or f"Nothing new from {source.label()}.",
                )
            if new_rows == 0:
                raise InvalidInput(
                    f"{source.label()} gave no rows, so no version was made. Check the path, "
                    "query or filter, and that the file has data rows below its header."
                )
            if artifacts.is_local:  # object storage hashes while it uploads
                hashes = storage.BackgroundHashes(parts)
            columns = storage.columns_of(storage.arrow_schema(parts))
            previous = [ColumnSchema.model_validate(c) for c in base.columns]
            changes = diff_columns(previous, columns) if base.latest else SchemaChanges()
            if mode == "append" and base.latest:
                # An appended batch may lack optional columns (they read back as NULL); the
                # version's schema is the union: the previous columns plus any added ones.
                changes = SchemaChanges(added=changes.added, retyped=changes.retyped)
                columns = previous + changes.added
            check_policy(name, base.policy, changes, appending=mode == "append")
            prev_paths = (
                storage.readable_paths(artifacts, settings, base.files)
                if mode == "append" and base.files
                else []
            )
            new_paths = [str(p) for p in parts]
            report = self._validate_batch(con, new_paths, base.suite)
            status = "ready"
            if report is not None and not report.success:
                on_failure = (base.suite or {}).get("on_failure", "fail")
                if on_failure == "fail":
                    raise InvalidInput(
                        f"The new data for {name!r} failed validation, so no version was made.\n"
                        f"{report.summary()}\nFix the data, or change the expectations with "
                        f"`modelworks data expectations edit {name}`.",
                        report=report.model_dump(mode="json"),
                    )
                if on_failure == "quarantine":
                    status = "quarantined"
            # The new parts' NaN counts came with the write, which spares the profile a read
            # of their float columns; the previous parts' (on append) are counted by reading.
            profile = _profile(con, prev_paths + new_paths, parts.float_counts)
            rejects_saved = None
            if rejects is not None and rejects.count and rejects.side_file is not None:
                rejects_saved = artifacts.put_file(rejects.side_file)
            files = storage.publish_parts(
                artifacts, parts, hashes.result() if hashes is not None else None
            )
        finally:
            if hashes is not None:
                hashes.close()
            con.close()
            shutil.rmtree(stage, ignore_errors=True)
        all_files = (
            [PartFile.model_validate(f) for f in base.files] + files
            if (mode == "append")
            else files
        )
        result_version = self._commit(
            principal,
            project,
            name,
            source,
            base,
            mode=mode,
            status=status,
            files=all_files,
            columns=columns,
            changes=changes,
            profile=profile,
            rejects=_rejects_out(rejects, rejects_saved),
            report=report,
            new_cursor=new_cursor,
            message=message,
            parents=parents,
            recipe=recipe,
            relation=relation,
        )
        return IngestResult(
            version=result_version,
            rows=new_rows,
            rejects=result_version.rejects,
            validation=report,
            seconds=time.perf_counter() - started,
            message=scan_message,
        )

    def _read_base(
        self, principal: Principal, project: str, name: str, source: Source, *, create: bool
    ) -> _Base:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Writing a dataset")
            check_source_allowed(s, principal, proj, source, self.store.settings)
            ds = s.scalar(
                select(Dataset).where(Dataset.project_id == proj.id, Dataset.name == name)
            )
            if ds is not None and ds.deleted_at is not None:
                raise Conflict(
                    f"Dataset {name!r} was deleted; restore it with `modelworks data restore "
                    f"{name}` before adding versions."
                )
            if ds is None:
                if not create:
                    raise NotFound(
                        f"Dataset {name!r} does not exist in project {proj.name!r}; create it "
                        "first or ingest without --no-create."
                    )
                return _Base(proj.id, None, None, [], [], "additive", None, None)
            latest = None
            if ds.latest_version:
                latest = s.scalar(
                    select(DatasetVersion).where(
                        DatasetVersion.dataset_id == ds.id,
                        DatasetVersion.version == ds.latest_version,
                    )
                )
            cursor = s.scalar(
                select(SourceCursor.position).where(
                    SourceCursor.dataset_id == ds.id, SourceCursor.source_key == source.source_key
                )
            )
            return _Base(
                project_id=proj.id,
                dataset_id=ds.id,
                latest=ds.latest_version or None,
                files=list(latest.files) if latest else [],
                columns=list(latest.columns) if latest else [],
                policy=ds.schema_policy,
                suite=ds.expectations,
                cursor=cursor,
            )

    def _scan_and_write(
        self, source: Source, ctx: ScanContext, stage: Path
    ) -> tuple[storage.WrittenParts | None, Rejects | None, str, dict[str, Any] | None]:
        try:
            scan = source.scan(ctx)
        except ModelworksError:
            raise
        except duckdb.Error as exc:
            raise _source_error(source, exc) from None
        try:
            if scan.relation is None:
                return None, None, scan.message, scan.cursor
            # A scan that took a shortcut may see in what it wrote that it must read again
            # the careful way (a CSV column parsed by DuckDB's reader refused a value).
            scan, parts = write_scan(scan, lambda rel: self._write(source, ctx, rel, stage))
            rejects = scan.rejects() if scan.rejects is not None else None
            return parts, rejects, scan.message, scan.cursor
        finally:
            if scan.close is not None:
                scan.close()

    def _write(
        self,
        source: Source,
        ctx: ScanContext,
        relation: duckdb.DuckDBPyRelation,
        stage: Path,
    ) -> storage.WrittenParts:
        try:
            return storage.write_parts(ctx.con, relation, stage / "parts")
        except ModelworksError:
            raise
        except duckdb.Error as exc:
            raise _source_error(source, exc) from None

    def _advance_cursor(
        self,
        principal: Principal,
        project: str,
        name: str,
        source: Source,
        base: _Base,
        new_cursor: dict[str, Any] | None,
    ) -> None:
        """Move a resumable source's position past messages that gave no rows (all bad, or
        a start position pinned before any message), so the next poll does not read them
        again. Same optimistic check as a commit; without a dataset there is nowhere to
        keep it yet."""
        if not source.resumable or new_cursor is None or new_cursor == base.cursor:
            return
        if base.dataset_id is None:
            return
        with self.store.transaction() as s:
            require_project(s, principal, project, Role.EDITOR, "Writing a dataset")
            row = s.scalar(
                select(SourceCursor).where(
                    SourceCursor.dataset_id == base.dataset_id,
                    SourceCursor.source_key == source.source_key,
                )
            )
            if (row.position if row else None) != base.cursor:
                raise Conflict(
                    f"Another ingest of {source.label()} into {name!r} moved its position "
                    "first; nothing was stored. Run it again to continue."
                )
            now = utcnow()
            if row is None:
                s.add(
                    SourceCursor(
                        id=new_id(),
                        dataset_id=base.dataset_id,
                        source_key=source.source_key,
                        position=new_cursor,
                        version=base.latest or 0,
                        updated_at=now,
                    )
                )
            else:
                row.position = new_cursor
                row.updated_at = now

    def _validate_batch(
        self, con: duckdb.DuckDBPyConnection, paths: list[str], suite: dict[str, Any] | None
    ) -> ValidationReport | None:
        if not suite:
            return None
        from modelworks.data.expectations import suite_from_json
        from modelworks.data.validation import validate_paths

        return validate_paths(con, paths, suite_from_json(suite))

    def _commit(
        self,
        principal: Principal,
        project: str,
        name: str,
        source: Source,
        base: _Base,
        *,
        mode: str,
        status: str,
        files: list[PartFile],
        columns: list[ColumnSchema],
        changes: SchemaChanges,
        profile: Profile,
        rejects: RejectsOut | None,
        report: ValidationReport | None,
        new_cursor: dict[str, Any] | None,
        message: str,
        parents: Sequence[VersionOut],
        recipe: dict[str, Any] | None,
        relation: str,
    ) -> VersionOut:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Writing a dataset")
            ds = s.scalar(
                select(Dataset)
                .where(Dataset.project_id == proj.id, Dataset.name == name)
                .with_for_update()
            )
            if ds is None:
                ds = self._create(s, principal, proj, name, "", "additive")
            elif ds.deleted_at is not None:
                raise Conflict(
                    f"Dataset {name!r} was deleted while the ingest ran; nothing stored."
                )
            if (ds.latest_version or None) != base.latest and mode == "append":
                raise Conflict(
                    f"Dataset {name!r} changed while this append ran (latest is now "
                    f"{ds.latest_version}, was {base.latest}); nothing was stored. Run it again."
                )
            cursor_row = None
            if source.resumable:
                cursor_row = s.scalar(
                    select(SourceCursor).where(
                        SourceCursor.dataset_id == ds.id,
                        SourceCursor.source_key == source.source_key,
                    )
                )
                if (cursor_row.position if cursor_row else None) != base.cursor:
                    raise Conflict(
                        f"Another ingest of {source.label()} into {name!r} committed first; "
                        "nothing was stored and no rows were lost. Run it again to continue."
                    )
            number = ds.version_count + 1
            now = utcnow()
            v = DatasetVersion(
                id=new_id(),
                dataset_id=ds.id,
                project_id=proj.id,
                version=number,
                status=status,
                mode=mode,
                parent_version=base.latest if mode == "append" else None,
                files=[f.model_dump() for f in files],
                columns=[c.model_dump() for c in columns],
                row_count=sum(f.rows for f in files),
                size_bytes=sum(f.size for f in files),
                content_hash=storage.content_hash(files),
                source={"kind": source.kind, "params": source.describe()},
                recipe=recipe,
                schema_changes=changes.model_dump(mode="json"),
                profile=profile.model_dump(mode="json"),
                rejects=rejects.model_dump(mode="json") if rejects else None,
                validation_success=report.success if report is not None else None,
                message=message,
                created_by=principal.actor,
                created_at=now,
            )
            s.add(v)
            ds.version_count = number
            if status == "ready":
                ds.latest_version = number
            ds.updated_at = now
            if source.resumable and new_cursor is not None:
                if cursor_row is None:
                    s.add(
                        SourceCursor(
                            id=new_id(),
                            dataset_id=ds.id,
                            source_key=source.source_key,
                            position=new_cursor,
                            version=number,
                            updated_at=now,
                        )
                    )
                else:
                    cursor_row.position = new_cursor
                    cursor_row.version = number
                    cursor_row.updated_at = now
            node = version_node(name, v)
            if parents:
                for p in parents:
                    lineage.record(
                        s, proj.id, lineage.Node("dataset_version", p.id, p.ref), node, relation
                    )
            else:
                lineage.record(s, proj.id, source_node(source), node, relation)
            if mode == "append" and base.latest:
                prev_id = s.scalar(
                    select(DatasetVersion.id).where(
                        DatasetVersion.dataset_id == ds.id, DatasetVersion.version == base.latest
                    )
                )
                if prev_id:
                    prev_node = lineage.Node("dataset_version", prev_id, f"{name}@{base.latest}")
                    lineage.record(s, proj.id, prev_node, node, "appended_to")
            if report is not None:
                s.add(
                    ValidationRun(
                        id=new_id(),
                        version_id=v.id,
                        project_id=proj.id,
                        trigger="ingest",
                        success=report.success,
                        suite=base.suite or {},
                        report=report.model_dump(mode="json"),
                        created_by=principal.actor,
                        created_at=now,
                    )
                )
            try:
                with s.begin_nested():
                    s.flush()
            except IntegrityError:
                raise Conflict(
                    f"Another version of {name!r} was written at the same moment; nothing was "
                    "stored. Run it again."
                )
            audit.record(
                s,
                principal,
                "dataset.version.create",
                "dataset_version",
                v.id,
                project_id=proj.id,
                changes={
                    "dataset": name,
                    "version": number,
                    "status": status,
                    "mode": mode,
                    "rows": v.row_count,
                    "source": source.kind,
                    "content_hash": v.content_hash,
                },
            )
            return version_out(ds, v, ())

    # ---- reading -----------------------------------------------------------------------
    def read_paths(
        self, principal: Principal, project: str, ref: str
    ) -> tuple[VersionOut, list[str]]:
        """The version and local, verified paths of its Parquet parts, in read order."""
        version = self.get_version(principal, project, ref, with_profile=False)
        paths = storage.readable_paths(self.store.artifacts, self.store.settings, version.files)
        return version, paths

    def preview(
        self,
        principal: Principal,
        project: str,
        ref: str,
        *,
        offset: int = 0,
        limit: int = 50,
        columns: Sequence[str] | None = None,
    ) -> PreviewOut:
        if offset < 0:
            raise InvalidInput(f"offset must be 0 or more; got {offset}.")
        if limit < 1 or limit > MAX_PREVIEW_ROWS:
            raise InvalidInput(f"limit must be between 1 and {MAX_PREVIEW_ROWS}; got {limit}.")
        from modelworks.data.profile import json_safe

        version, paths = self.read_paths(principal, project, ref)
        known = [c.name for c in version.columns]
        chosen = list(columns) if columns else known
        missing = [c for c in chosen if c not in known]
        if missing:
            raise InvalidInput(
                f"{version.ref} has no column(s) {', '.join(map(repr, missing))}; it has "
                f"{', '.join(known)}."
            )
        con = storage.connect(self.store.settings)
        try:
            con.register("mw_preview", storage.relation_of(con, paths))
            select_list = ", ".join(storage.quote_identifier(c) for c in chosen)
            rows = con.sql(
                f"SELECT {select_list} FROM mw_preview LIMIT {int(limit)} OFFSET {int(offset)}"
            ).fetchall()
        finally:
            con.close()
        out_cols = [c for c in version.columns if c.name in set(chosen)]
        out_cols.sort(key=lambda c: chosen.index(c.name))
        return PreviewOut(
            ref=version.ref,
            columns=out_cols,
            rows=[[json_safe(v) for v in row] for row in rows],
            offset=offset,
            limit=limit,
            total=version.row_count,
        )

    def profile(self, principal: Principal, project: str, ref: str) -> Profile:
        version = self.get_version(principal, project, ref)
        if version.profile is not None:
            return version.profile
        _, paths = self.read_paths(principal, project, ref)
        con = storage.connect(self.store.settings)
        try:
            return _profile(con, paths)
        finally:
            con.close()

    # ---- expectations and validation ---------------------------------------------------
    def get_expectations(
        self, principal: Principal, project: str, name: str
    ) -> dict[str, Any] | None:
        """The dataset's expectation suite as JSON, or None when it has none."""
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading datasets")
            return self._dataset(s, proj, name).expectations

    def set_expectations(
        self, principal: Principal, project: str, name: str, suite: dict[str, Any] | None
    ) -> DatasetOut:
        """Store the suite run at every ingest (``None`` removes it)."""
        normalised: dict[str, Any] | None = None
        if suite is not None:
            from modelworks.data.expectations import suite_from_json, suite_to_json

            normalised = suite_to_json(suite_from_json(suite))
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Setting expectations")
            ds = self._dataset(s, proj, name)
            ds.expectations = normalised
            ds.updated_at = utcnow()
            audit.record(
                s, principal, "dataset.expectations.set", "dataset", ds.id, project_id=proj.id,
                changes={"expectations": len((normalised or {}).get("expectations", []))},
            )  # fmt: skip
            return dataset_out(ds)

    def infer_expectations(self, principal: Principal, project: str, ref: str) -> dict[str, Any]:
        from modelworks.data.expectations import infer_suite, suite_to_json

        return suite_to_json(infer_suite(self.profile(principal, project, ref)))

    def validate(
        self,
        principal: Principal,
        project: str,
        ref: str,
        suite: dict[str, Any] | None = None,
    ) -> ValidationRunOut:
        """Run ``suite`` (default: the dataset's own) on a version and store the result."""
        from modelworks.data.expectations import suite_from_json, suite_to_json
        from modelworks.data.validation import validate_paths

        if suite is None:
            ref_name = parse_ref(ref).name
            suite = self.get_expectations(principal, project, ref_name)
            if suite is None:
                raise InvalidInput(
                    f"Dataset {ref_name!r} has no expectations. Infer some with `modelworks data "
                    f"expectations infer {ref}` or pass a suite."
                )
        parsed = suite_from_json(suite)
        version, paths = self.read_paths(principal, project, ref)
        con = storage.connect(self.store.settings)
        try:
            report = validate_paths(con, paths, parsed)
        finally:
            con.close()
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Validating a dataset")
            run = ValidationRun(
                id=new_id(),
                version_id=version.id,
                project_id=proj.id,
                trigger="manual",
                success=report.success,
                suite=suite_to_json(parsed),
                report=report.model_dump(mode="json"),
                created_by=principal.actor,
                created_at=utcnow(),
            )
            s.add(run)
            audit.record(
                s, principal, "dataset.validate", "dataset_version", version.id,
                project_id=proj.id, changes={"success": report.success},
            )  # fmt: skip
            return _validation_out(run, version.ref)

    def list_validations(
        self, principal: Principal, project: str, ref: str, *, limit: int = 50
    ) -> list[ValidationRunOut]:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading datasets")
            ds, v = self._resolve(s, proj, ref)
            runs = s.scalars(
                select(ValidationRun)
                .where(ValidationRun.version_id == v.id)
                .order_by(ValidationRun.created_at.desc(), ValidationRun.id.desc())
                .limit(limit)
            ).all()
            return [_validation_out(r, f"{ds.name}@{v.version}") for r in runs]

    # ---- lineage -----------------------------------------------------------------------
    def lineage(
        self,
        principal: Principal,
        project: str,
        ref: str,
        *,
        direction: lineage.Direction = "both",
        depth: int = 10,
    ) -> LineageOut:
        if direction not in ("up", "down", "both"):
            raise InvalidInput(f"direction must be up, down or both; got {direction!r}.")
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading lineage")
            ds, v = self._resolve(s, proj, ref)
            root = version_node(ds.name, v)
            graph = lineage.walk(s, proj.id, root, direction=direction, depth=depth)
            return LineageOut(
                root=_node_out(root),
                nodes=[_node_out(n) for n in graph.nodes.values()],
                edges=[
                    LineageEdgeOut(
                        parent=LineageNodeOut(
                            type=e.parent_type, id=e.parent_id, label=e.parent_label
                        ),
                        child=LineageNodeOut(type=e.child_type, id=e.child_id, label=e.child_label),
                        relation=e.relation,
                        meta=e.meta or {},
                        created_at=e.created_at,
                    )
                    for e in graph.edges
                ],
            )

    def count_versions(self, principal: Principal, project: str) -> int:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading datasets")
            return int(
                s.scalar(
                    select(func.count(DatasetVersion.id)).where(
                        DatasetVersion.project_id == proj.id
                    )
                )
                or 0
            )


def _source_error(source: Source, exc: Exception) -> InvalidInput:
    """A reading error as a message: secrets masked, and without the Python traceback that
    pyarrow embeds when a streamed source fails mid-way."""
    text = str(exc).split(". Detail: Python exception", 1)[0]
    text = text.split("\nTraceback (most recent call last)", 1)[0]
    return InvalidInput(f"Reading {source.label()} failed: {redact(text)}")


def _node_out(n: lineage.Node) -> LineageNodeOut:
    return LineageNodeOut(type=n.type, id=n.id, label=n.label)


def _validation_out(run: ValidationRun, ref: str) -> ValidationRunOut:
    return ValidationRunOut(
        id=run.id,
        ref=ref,
        trigger=run.trigger,
        success=run.success,
        report=ValidationReport.model_validate(run.report),
        created_by=run.created_by,
        created_at=run.created_at,
    )


def _profile(
    con: duckdb.DuckDBPyConnection,
    paths: list[str],
    float_counts: Mapping[str, Mapping[str, storage.FloatCounts]] | None = None,
) -> Profile:
    from modelworks.data.profile import profile_paths

    return profile_paths(con, paths, float_counts=float_counts)


def _rejects_out(rejects: Rejects | None, saved: Any) -> RejectsOut | None:
    if rejects is None or not rejects.count:
        return None
    return RejectsOut(
        count=rejects.count,
        sha256=saved.sha256 if saved is not None else None,
        size=saved.size if saved is not None else 0,
        examples=rejects.examples[:5],
    )


def _check_policy_name(policy: str) -> None:
    if policy not in SCHEMA_POLICIES:
        raise InvalidInput(
            f"schema_policy must be one of {', '.join(SCHEMA_POLICIES)}; got {policy!r}. "
            "strict: no schema changes; additive: new columns allowed; any: everything allowed."
        )
