"""Tracking service: the one implementation of every tracking rule.

REST, CLI, SDK and UI call these methods; each method is one transaction, authorised
against the caller's role in the project, and leaves one audit record per mutation.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import TypeAdapter
from sqlalchemy import Select, Text, and_, cast, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelworks.core import audit
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelworks.core.ids import new_id, utcnow
from modelworks.core.schemas import Page, check_page_size, decode_page_token, encode_page_token
from modelworks.core.store import Store
from modelworks.governance.access import authorize, require_project
from modelworks.governance.models import Project
from modelworks.tracking.filters import apply_order, compile_filter, parse_filter, parse_order_by
from modelworks.tracking.models import (
    RUN_STATUSES,
    AppliedBatch,
    Experiment,
    LatestMetric,
    Metric,
    Run,
    RunArtifact,
    RunParam,
    RunTag,
)
from modelworks.tracking.schemas import (
    ArtifactOut,
    ExperimentOut,
    MetricIn,
    MetricPoint,
    RunComparison,
    RunOut,
    check_key,
)

MAX_PARAM_VALUE = 6000
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_TAG_VALUE = 8000


def _exp_out(e: Experiment, run_count: int | None = None) -> ExperimentOut:
    return ExperimentOut(
        id=e.id,
        project_id=e.project_id,
        name=e.name,
        description=e.description,
        tags=e.tags or {},
        created_by=e.created_by,
        created_at=e.created_at,
        updated_at=e.updated_at,
        deleted=e.deleted_at is not None,
        run_count=run_count,
    )


_RUN_LIST = TypeAdapter(list[RunOut])


class TrackingService:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- experiments -------------------------------------------------------------------
    def _experiment(
        self, s: Session, project: Project, ref: str, *, include_deleted: bool = False
    ) -> Experiment:
        stmt = select(Experiment).where(
            Experiment.project_id == project.id, or_(Experiment.id == ref, Experiment.name == ref)
        )
        exp = s.scalar(stmt)
        if exp is None or (exp.deleted_at is not None and not include_deleted):
            hint = (
                " It was deleted; restore it with `modelworks experiments restore`."
                if exp is not None
                else " List experiments with `modelworks experiments list`."
            )
            raise NotFound(f"Experiment {ref!r} does not exist in project {project.name!r}.{hint}")
        return exp

    def _create_experiment(
        self,
        s: Session,
        principal: Principal,
        project: Project,
        name: str,
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> Experiment:
        name = _experiment_name(name)
        existing = s.scalar(
            select(Experiment).where(Experiment.project_id == project.id, Experiment.name == name)
        )
        if existing is not None:
            state = " (deleted; restore it or pick another name)" if existing.deleted_at else ""
            raise AlreadyExists(
                f"Experiment {name!r} already exists in project {project.name!r}{state}."
            )
        exp = Experiment(
            id=new_id(),
            project_id=project.id,
            name=name,
            description=description,
            tags=dict(tags or {}),
            created_by=principal.actor,
        )
        s.add(exp)
        try:
            with s.begin_nested():
                s.flush()
        except IntegrityError:
            raise AlreadyExists(f"Experiment {name!r} already exists in project {project.name!r}.")
        audit.record(
            s,
            principal,
            "experiment.create",
            "experiment",
            exp.id,
            project_id=project.id,
            changes={"name": name},
        )
        return exp

    def create_experiment(
        self,
        principal: Principal,
        project: str,
        name: str,
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> ExperimentOut:
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.EDITOR, "Creating experiments")
            return _exp_out(self._create_experiment(s, principal, p, name, description, tags))

    def get_experiment(self, principal: Principal, project: str, ref: str) -> ExperimentOut:
        with self.store.read() as s:
            p = require_project(s, principal, project, Role.VIEWER, "Reading experiments")
            exp = self._experiment(s, p, ref, include_deleted=True)
            count = s.scalar(
                select(func.count()).where(Run.experiment_id == exp.id, Run.deleted_at.is_(None))
            )
            return _exp_out(exp, int(count or 0))

    def list_experiments(
        self,
        principal: Principal,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[ExperimentOut]:
        check_page_size(max_results)
        offset = decode_page_token(page_token)
        with self.store.read() as s:
            p = require_project(s, principal, project, Role.VIEWER, "Listing experiments")
            counts = (
                select(Run.experiment_id, func.count().label("n"))
                .where(Run.deleted_at.is_(None), Run.project_id == p.id)
                .group_by(Run.experiment_id)
                .subquery()
            )
            stmt = (
                select(Experiment, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.experiment_id == Experiment.id)
                .where(Experiment.project_id == p.id)
            )
            if not include_deleted:
                stmt = stmt.where(Experiment.deleted_at.is_(None))
            rows = s.execute(
                stmt.order_by(Experiment.created_at.desc(), Experiment.id.desc())
                .offset(offset)
                .limit(max_results + 1)
            ).all()
            items = [_exp_out(e, int(n)) for e, n in rows[:max_results]]
            nxt = encode_page_token(offset + max_results) if len(rows) > max_results else None
            return Page[ExperimentOut](items=items, next_page_token=nxt)

    def update_experiment(
        self,
        principal: Principal,
        project: str,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> ExperimentOut:
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.EDITOR, "Updating experiments")
            exp = self._experiment(s, p, ref)
            changes: dict[str, Any] = {}
            if name is not None and name != exp.name:
                name = _experiment_name(name)
                clash = s.scalar(
                    select(Experiment.id).where(
                        Experiment.project_id == p.id, Experiment.name == name
                    )
                )
                if clash:
                    raise AlreadyExists(f"Experiment {name!r} already exists in {p.name!r}.")
                changes["name"] = [exp.name, name]
                exp.name = name
            if description is not None:
                changes["description"] = [exp.description, description]
                exp.description = description
            if tags is not None:
                changes["tags"] = [exp.tags, tags]
                exp.tags = {**(exp.tags or {}), **tags}
            exp.updated_at = utcnow()
            audit.record(
                s,
                principal,
                "experiment.update",
                "experiment",
                exp.id,
                project_id=p.id,
                changes=changes,
            )
            return _exp_out(exp)

    def delete_experiment(self, principal: Principal, project: str, ref: str) -> ExperimentOut:
        """Soft delete: the experiment and its runs are hidden, nothing is erased."""
        return self._set_experiment_deleted(principal, project, ref, deleted=True)

    def restore_experiment(self, principal: Principal, project: str, ref: str) -> ExperimentOut:
        return self._set_experiment_deleted(principal, project, ref, deleted=False)

    def _set_experiment_deleted(
        self, principal: Principal, project: str, ref: str, *, deleted: bool
    ) -> ExperimentOut:
        verb = "Deleting" if deleted else "Restoring"
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.MAINTAINER, f"{verb} experiments")
            exp = self._experiment(s, p, ref, include_deleted=True)
            exp.deleted_at = utcnow() if deleted else None
            exp.updated_at = utcnow()
            audit.record(
                s,
                principal,
                "experiment.delete" if deleted else "experiment.restore",
                "experiment",
                exp.id,
                project_id=p.id,
            )
            return _exp_out(exp)

    # ---- runs --------------------------------------------------------------------------
    def _run(
        self, s: Session, principal: Principal, run_id: str, need: Role, action: str
    ) -> tuple[Run, Project]:
        row = s.execute(
            select(Run, Project).join(Project, Project.id == Run.project_id).where(Run.id == run_id)
        ).one_or_none()
        if row is None:
            raise NotFound(f"Run {run_id!r} does not exist; find runs with `modelworks runs list`.")
        run, project = row
        authorize(s, principal, project, need, action)
        if run.deleted_at is not None and need > Role.VIEWER and action != "Restoring runs":
            raise Conflict(f"Run {run_id!r} is deleted; restore it before changing it.")
        return run, project

    def create_run(
        self,
        principal: Principal,
        project: str,
        experiment: str,
        *,
        name: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        system_info: dict[str, Any] | None = None,
    ) -> RunOut:
        """Start a run; the experiment is created when no experiment has that name."""
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.EDITOR, "Creating runs")
            try:
                exp = self._experiment(s, p, experiment)
            except NotFound:
                deleted = s.scalar(
                    select(Experiment.id).where(
                        Experiment.project_id == p.id,
                        or_(Experiment.id == experiment, Experiment.name == experiment),
                    )
                )
                if deleted:
                    raise
                exp = self._create_experiment(s, principal, p, experiment)
            if parent_run_id is not None:
                parent = s.get(Run, parent_run_id)
                if parent is None or parent.project_id != p.id:
                    raise NotFound(
                        f"Parent run {parent_run_id!r} does not exist in project {p.name!r}."
                    )
            run_id = new_id()
            run = Run(
                id=run_id,
                experiment_id=exp.id,
                project_id=p.id,
                name=(name or f"run-{run_id[-8:].lower()}")[:200],
                status="RUNNING",
                start_time=utcnow(),
                parent_run_id=parent_run_id,
                created_by=principal.actor,
                description=description,
                system_info=dict(system_info or {}),
            )
            s.add(run)
            s.flush()
            self._log_params(s, run, {k: _param_str(v) for k, v in (params or {}).items()})
            self._log_tags(s, run, tags or {})
            audit.record(
                s,
                principal,
                "run.create",
                "run",
                run.id,
                project_id=p.id,
                changes={"experiment": exp.name, "name": run.name, "parent": parent_run_id},
            )
            return self._runs_out(s, [run])[0]

    def get_run(self, principal: Principal, run_id: str) -> RunOut:
        with self.store.read() as s:
            run, _ = self._run(s, principal, run_id, Role.VIEWER, "Reading runs")
            return self._runs_out(s, [run])[0]

    def update_run(
        self,
        principal: Principal,
        run_id: str,
        *,
        status: str | None = None,
        end_time: Any = None,
        name: str | None = None,
        description: str | None = None,
    ) -> RunOut:
        with self.store.transaction() as s:
            run, project = self._run(s, principal, run_id, Role.EDITOR, "Updating runs")
            changes: dict[str, Any] = {}
            if status is not None:
                status = status.upper()
                if status not in RUN_STATUSES:
                    raise InvalidInput(
                        f"Run status {status!r} is not valid; use one of {', '.join(RUN_STATUSES)}."
                    )
                changes["status"] = [run.status, status]
                run.status = status
                if status != "RUNNING" and run.end_time is None and end_time is None:
                    run.end_time = utcnow()
            if end_time is not None:
                run.end_time = end_time
            if name is not None:
                changes["name"] = [run.name, name]
                run.name = name[:200]
            if description is not None:
                run.description = description
                changes["description"] = True
            audit.record(
                s, principal, "run.update", "run", run.id, project_id=project.id, changes=changes
            )
            return self._runs_out(s, [run])[0]

    def delete_run(self, principal: Principal, run_id: str) -> RunOut:
        with self.store.transaction() as s:
            run, project = self._run(s, principal, run_id, Role.MAINTAINER, "Deleting runs")
            run.deleted_at = utcnow()
            audit.record(s, principal, "run.delete", "run", run.id, project_id=project.id)
            return self._runs_out(s, [run])[0]

    def restore_run(self, principal: Principal, run_id: str) -> RunOut:
        with self.store.transaction() as s:
            run, project = self._run(s, principal, run_id, Role.MAINTAINER, "Restoring runs")
            run.deleted_at = None
            audit.record(s, principal, "run.restore", "run", run.id, project_id=project.id)
            return self._runs_out(s, [run])[0]

    # ---- logging -----------------------------------------------------------------------
    def log_batch(
        self,
        principal: Principal,
        run_id: str,
        *,
        metrics: Sequence[MetricIn] = (),
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Log metrics, params and tags in one transaction (one audit record).

        With an ``idempotency_key``, a batch that was already applied is not applied again,
        so a client may safely resend a request whose answer it never got.
        """
        params = {k: _param_str(v) for k, v in (params or {}).items()}
        tags = dict(tags or {})
        if not metrics and not params and not tags:
            return
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise InvalidInput(
                "Idempotency key must be 8-64 letters, digits, '-' or '_' (a UUID, say)."
            )
        with self.store.transaction() as s:
            run, project = self._run(s, principal, run_id, Role.EDITOR, "Logging to runs")
            if idempotency_key is not None and not _claim_batch(s, idempotency_key, run.id):
                return
            self._log_params(s, run, params)
            self._log_tags(s, run, tags)
            self._log_metrics(s, run, metrics)
            audit.record(
                s,
                principal,
                "run.log",
                "run",
                run.id,
                project_id=project.id,
                changes={
                    "metrics": len(metrics),
                    "metric_keys": sorted({m.key for m in metrics})[:50],
                    "params": sorted(params)[:50],
                    "tags": sorted(tags)[:50],
                },
            )

    def _log_params(self, s: Session, run: Run, params: dict[str, str]) -> None:
        if not params:
            return
        for key, value in params.items():
            check_key("Param", key)
            if len(value) > MAX_PARAM_VALUE:
                raise InvalidInput(
                    f"Param {key!r} is {len(value)} characters; the limit is {MAX_PARAM_VALUE}. "
                    "Log long values as an artifact instead."
                )
        existing = dict(
            s.execute(
                select(RunParam.key, RunParam.value).where(
                    RunParam.run_id == run.id, RunParam.key.in_(list(params))
                )
            ).all()
        )
        for key, value in params.items():
            if key in existing and existing[key] != value:
                raise Conflict(
                    f"Param {key!r} of run {run.id} is already {existing[key]!r}; params cannot "
                    f"change once logged (got {value!r}). Log a metric or tag instead, or start "
                    "a new run."
                )
        new = [
            {"run_id": run.id, "key": k, "value": v} for k, v in params.items() if k not in existing
        ]
        if new:
            s.execute(_insert(s)(RunParam), new)

    def _log_tags(self, s: Session, run: Run, tags: dict[str, str]) -> None:
        if not tags:
            return
        rows = []
        for key, value in tags.items():
            check_key("Tag", key)
            value = str(value)
            if len(value) > MAX_TAG_VALUE:
                raise InvalidInput(f"Tag {key!r} is longer than {MAX_TAG_VALUE} characters.")
            rows.append({"run_id": run.id, "key": key, "value": value})
        ins = _insert(s)(RunTag)
        s.execute(
            ins.on_conflict_do_update(
                index_elements=["run_id", "key"], set_={"value": ins.excluded.value}
            ),
            rows,
        )

    def _log_metrics(self, s: Session, run: Run, metrics: Sequence[MetricIn]) -> None:
        if not metrics:
            return
        now_ms = int(time.time() * 1000)
        rows = []
        latest: dict[str, dict[str, Any]] = {}
        for m in metrics:
            check_key("Metric", m.key)
            row = {
                "run_id": run.id,
                "key": m.key,
                "value": m.value,
                "step": int(m.step),
                "timestamp_ms": int(m.timestamp_ms if m.timestamp_ms is not None else now_ms),
            }
            rows.append(row)
            cur = latest.get(m.key)
            if cur is None or (row["step"], row["timestamp_ms"]) >= (
                cur["step"],
                cur["timestamp_ms"],
            ):
                latest[m.key] = row
        s.execute(_insert(s)(Metric), rows)
        ins = _insert(s)(LatestMetric)
        newer = or_(
            ins.excluded.step > LatestMetric.step,
            and_(
                ins.excluded.step == LatestMetric.step,
                ins.excluded.timestamp_ms >= LatestMetric.timestamp_ms,
            ),
        )
        s.execute(
            ins.on_conflict_do_update(
                index_elements=["run_id", "key"],
                set_={
                    "value": ins.excluded.value,
                    "step": ins.excluded.step,
                    "timestamp_ms": ins.excluded.timestamp_ms,
                },
                where=newer,
            ),
            list(latest.values()),
        )

    def metric_history(self, principal: Principal, run_id: str, key: str) -> list[MetricPoint]:
        with self.store.read() as s:
            self._run(s, principal, run_id, Role.VIEWER, "Reading runs")
            return self._histories(s, [run_id], [key]).get(key, {}).get(run_id, [])

    def _histories(
        self, s: Session, run_ids: Sequence[str], keys: Sequence[str]
    ) -> dict[str, dict[str, list[MetricPoint]]]:
        out: dict[str, dict[str, list[MetricPoint]]] = defaultdict(dict)
        if not run_ids or not keys:
            return out
        rows = s.execute(
            select(Metric.run_id, Metric.key, Metric.value, Metric.step, Metric.timestamp_ms)
            .where(Metric.run_id.in_(list(run_ids)), Metric.key.in_(list(keys)))
            .order_by(Metric.run_id, Metric.key, Metric.step, Metric.timestamp_ms, Metric.id)
        )
        for run_id, key, value, step, ts in rows:
            out[key].setdefault(run_id, []).append(
                MetricPoint(key=key, value=value, step=step, timestamp_ms=ts)
            )
        return out

    # ---- artifacts ---------------------------------------------------------------------
    def log_artifact(
        self,
        principal: Principal,
        run_id: str,
        path: str,
        source: bytes | str | os.PathLike[str] | BinaryIO,
    ) -> ArtifactOut:
        """Store one file's bytes (content-addressed) and record it under ``path`` in the run."""
        from modelworks.core.artifacts import validate_relative_path

        path = validate_relative_path(path)
        with self.store.transaction() as s:  # authorise before any bytes move
            self._run(s, principal, run_id, Role.EDITOR, "Logging artifacts")
        store = self.store.artifacts
        if isinstance(source, bytes):
            info = store.put_bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            src = Path(source)
            if not src.is_file():
                raise InvalidInput(f"Artifact source {str(src)!r} is not a file.")
            info = store.put_file(src)
        else:
            info = store.put_stream(source)
        with self.store.transaction() as s:
            run, project = self._run(s, principal, run_id, Role.EDITOR, "Logging artifacts")
            row = s.get(RunArtifact, (run.id, path))
            before = row.sha256 if row else None
            if row is None:
                row = RunArtifact(run_id=run.id, path=path, sha256=info.sha256, size=info.size)
                s.add(row)
            else:
                row.sha256, row.size, row.created_at = info.sha256, info.size, utcnow()
            s.flush()
            audit.record(
                s,
                principal,
                "run.log_artifact",
                "run",
                run.id,
                project_id=project.id,
                changes={
                    "path": path,
                    "sha256": info.sha256,
                    "size": info.size,
                    "replaced": before,
                },
            )
            return ArtifactOut.model_validate(row)

    def log_artifacts(
        self,
        principal: Principal,
        run_id: str,
        local_dir: str | os.PathLike[str],
        artifact_path: str | None = None,
    ) -> list[ArtifactOut]:
        base = Path(local_dir)
        if not base.is_dir():
            raise InvalidInput(f"{str(base)!r} is not a folder.")
        out = []
        for f in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = f.relative_to(base).as_posix()
            out.append(
                self.log_artifact(
                    principal, run_id, f"{artifact_path}/{rel}" if artifact_path else rel, f
                )
            )
        return out

    def list_artifacts(
        self, principal: Principal, run_id: str, prefix: str | None = None
    ) -> list[ArtifactOut]:
        with self.store.read() as s:
            run, _ = self._run(s, principal, run_id, Role.VIEWER, "Reading runs")
            stmt = select(RunArtifact).where(RunArtifact.run_id == run.id)
            if prefix:
                stmt = stmt.where(
                    RunArtifact.path.startswith(prefix.rstrip("/") + "/", autoescape=True)
                    | (RunArtifact.path == prefix)
                )
            return [
                ArtifactOut.model_validate(a) for a in s.scalars(stmt.order_by(RunArtifact.path))
            ]

    def artifact_info(self, principal: Principal, run_id: str, path: str) -> ArtifactOut:
        from modelworks.core.artifacts import validate_relative_path

        path = validate_relative_path(path)
        with self.store.read() as s:
            run, _ = self._run(s, principal, run_id, Role.VIEWER, "Reading runs")
            row = s.get(RunArtifact, (run.id, path))
            if row is None:
                raise NotFound(
                    f"Run {run_id} has no artifact {path!r}; list them with "
                    f"`modelworks runs artifacts {run_id}`."
                )
            return ArtifactOut.model_validate(row)

    def read_artifact(self, principal: Principal, run_id: str, path: str) -> bytes:
        info = self.artifact_info(principal, run_id, path)
        return self.store.artifacts.get_bytes(info.sha256)

    def download_artifact(
        self, principal: Principal, run_id: str, path: str, dest: str | os.PathLike[str]
    ) -> Path:
        info = self.artifact_info(principal, run_id, path)
        return self.store.artifacts.download(info.sha256, dest)

    # ---- search and compare ------------------------------------------------------------
    def search_runs(
        self,
        principal: Principal,
        project: str,
        *,
        experiments: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        include_deleted: bool = False,
    ) -> Page[RunOut]:
        check_page_size(max_results)
        offset = decode_page_token(page_token)
        with self.store.read() as s:
            p = require_project(s, principal, project, Role.VIEWER, "Searching runs")
            exp_ids = (
                tuple(self._experiment(s, p, ref).id for ref in experiments)
                if experiments
                else None
            )
            base = _search_statement(
                s.get_bind().dialect.name,
                p.id,
                exp_ids,
                filter or None,
                tuple(order_by) if order_by else None,
                include_deleted,
            )
            stmt = base.offset(offset).limit(max_results + 1)
            # Core on the connection skips the ORM's per-statement work (search is hot).
            runs = s.connection().execute(stmt).all()
            items = self._runs_out(s, runs[:max_results])
            nxt = encode_page_token(offset + max_results) if len(runs) > max_results else None
            return Page[RunOut](items=items, next_page_token=nxt)

    def compare_runs(
        self, principal: Principal, run_ids: Sequence[str], metric_keys: Sequence[str] | None = None
    ) -> RunComparison:
        if not run_ids:
            raise InvalidInput("Give at least one run id to compare.")
        with self.store.read() as s:
            runs = [
                self._run(s, principal, rid, Role.VIEWER, "Reading runs")[0]
                for rid in dict.fromkeys(run_ids)
            ]
            outs = self._runs_out(s, runs)
            param_keys = sorted({k for r in outs for k in r.params})
            differing = [k for k in param_keys if len({r.params.get(k) for r in outs}) > 1]
            keys = (
                list(metric_keys) if metric_keys else sorted({k for r in outs for k in r.metrics})
            )
            histories = self._histories(s, [r.id for r in outs], keys)
            return RunComparison(
                runs=outs,
                param_keys=param_keys,
                differing_params=differing,
                metric_keys=keys,
                histories=dict(histories),
            )

    def _runs_out(self, s: Session, runs: Sequence[Any]) -> list[RunOut]:
        """Build RunOut for many runs.

        ``runs`` are rows that carry their params, tags and metrics as JSON columns (see
        :func:`_children_as_json`, which search selects directly), or ORM runs, whose rows
        are read here with the same columns.
        """
        if not runs:
            return []
        if not hasattr(runs[0], "params_json"):
            runs = self._rows_with_children(s, [r.id for r in runs])
        conn = s.connection()
        exp_names = dict(
            conn.execute(
                select(Experiment.id, Experiment.name).where(
                    Experiment.id.in_({r.experiment_id for r in runs})
                )
            ).all()
        )
        # One validation call for the whole list runs in pydantic's core: cheaper than
        # building thousands of models one by one.
        return _RUN_LIST.validate_python(
            [
                {
                    "id": r.id,
                    "experiment_id": r.experiment_id,
                    "experiment_name": exp_names.get(r.experiment_id, ""),
                    "project_id": r.project_id,
                    "name": r.name,
                    "status": r.status,
                    "start_time": r.start_time,
                    "end_time": r.end_time,
                    "parent_run_id": r.parent_run_id,
                    "created_by": r.created_by,
                    "description": r.description,
                    "system_info": r.system_info or {},
                    "params": _json_object(r.params_json),
                    "tags": _json_object(r.tags_json),
                    "metrics": {
                        k: None if v is None else float(v)
                        for k, v in _json_object(r.metrics_json).items()
                    },
                    "deleted": r.deleted_at is not None,
                }
                for r in runs
            ]
        )

    def _rows_with_children(self, s: Session, ids: Sequence[str]) -> list[Any]:
        s.flush()  # rows are read through Core: make this transaction's changes visible
        dialect = s.get_bind().dialect.name
        by_id = {}
        for chunk in _chunks(ids, 900):
            stmt = select(*Run.__table__.c, *_children_as_json(dialect)).where(Run.id.in_(chunk))
            by_id.update({r.id: r for r in s.connection().execute(stmt)})
        return [by_id[i] for i in ids]


@lru_cache(maxsize=256)
def _search_statement(
    dialect: str,
    project_id: str,
    experiment_ids: tuple[str, ...] | None,
    filter_text: str | None,
    order_by: tuple[str, ...] | None,
    include_deleted: bool,
) -> Select[Any]:
    """The search query before paging. Statements are immutable, so one parsed and built
    statement serves every repeat of the same search (dashboards poll the same query)."""
    expr = parse_filter(filter_text)
    keys = parse_order_by(list(order_by) if order_by else None)
    # Plain rows, not ORM objects: search returns up to thousands of runs.
    stmt: Select[Any] = select(*Run.__table__.c, *_children_as_json(dialect)).where(
        Run.project_id == project_id
    )
    if experiment_ids is not None:
        stmt = stmt.where(Run.experiment_id.in_(experiment_ids))
    if not include_deleted:
        live = select(Experiment.id).where(
            Experiment.project_id == project_id, Experiment.deleted_at.is_(None)
        )
        stmt = stmt.where(Run.deleted_at.is_(None), Run.experiment_id.in_(live))
    if expr is not None:
        stmt = stmt.where(compile_filter(expr))
    return apply_order(stmt, keys)


def _claim_batch(s: Session, key: str, run_id: str) -> bool:
    """Record ``key`` as applied; False when it already was (the batch is a retry).

    On PostgreSQL a concurrent claim of the same key waits for the other transaction and
    then fails only if that one committed, which is exactly the retry semantics wanted."""
    if s.get(AppliedBatch, key) is not None:
        return False
    try:
        with s.begin_nested():
            s.add(AppliedBatch(key=key, run_id=run_id))
    except IntegrityError:
        return False
    return True


def _children_as_json(dialect: str) -> list[Any]:
    """Correlated subqueries giving each run's params, tags and latest metrics as one JSON
    object each, so a search is one query however many runs it returns. Metric values
    travel as text: JSON cannot hold the infinities a metric may take."""
    agg = func.jsonb_object_agg if dialect == "postgresql" else func.json_group_object
    return [
        select(agg(RunParam.key, RunParam.value))
        .where(RunParam.run_id == Run.id)
        .scalar_subquery()
        .label("params_json"),
        select(agg(RunTag.key, RunTag.value))
        .where(RunTag.run_id == Run.id)
        .scalar_subquery()
        .label("tags_json"),
        select(agg(LatestMetric.key, cast(LatestMetric.value, Text)))
        .where(LatestMetric.run_id == Run.id)
        .scalar_subquery()
        .label("metrics_json"),
    ]


def _json_object(value: Any) -> dict[str, Any]:
    """An aggregated JSON object, keys sorted (PostgreSQL's jsonb orders them by length)."""
    if value is None:
        return {}
    # psycopg decodes jsonb itself; SQLite hands over text
    decoded: dict[str, Any] = value if isinstance(value, dict) else orjson.loads(value)
    return dict(sorted(decoded.items()))


def _experiment_name(name: str) -> str:
    """Names appear in pages and shell commands: no control characters.

    '/' is allowed (MLflow users group experiments like 'team/churn'); REST clients address
    such experiments by id.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("Experiment name must have 1 to 200 characters.")
    if any(ord(c) < 32 for c in name):
        raise InvalidInput(f"Experiment name {name!r} must not contain control characters.")
    return name


def _param_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _insert(s: Session) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT on SQLite and PostgreSQL alike."""
    return postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
