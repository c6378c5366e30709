"""Transforms and rebuilds: new dataset versions made from other versions, by a recipe.

Every transform resolves its inputs to exact versions first (``churn@latest`` ->
``churn@5``), then writes through :meth:`DataService.write_version` with those versions as
lineage parents (``derived_from``), ``threads=1`` (so the Parquet bytes depend only on the
inputs and the code) and a recipe that pins them. ``rebuild`` runs a recipe again into a
staging folder and compares content hashes: the same recipe on the same inputs with the
same engine gives the same bytes, so ``identical`` is a real proof, not a row count.

Recipes (``VersionOut.recipe``)::

    {"kind": "sql", "sql": ..., "inputs": {"churn@latest": "churn@5"}, "engine": "duckdb X"}
    {"kind": "clean", "input": "churn@3", "steps": [...], "computed": {"<step>": {...}},
     "engine": ...}
    {"kind": "python", "function": "module:qualname", "source_sha256": ..., "inputs": {...},
     "args": ["churn@5", ...], "takes": ["pandas", ...], "rebuildable": bool,
     "engine": ..., "libraries": {...}}
"""

from __future__ import annotations

import hashlib
import platform
import shutil
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb

from modelworks.core.auth import Principal
from modelworks.core.errors import InvalidInput, ModelworksError
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.cleansing import CleanSource, CleanStep, compile_steps, parse_steps
from modelworks.data.refs import check_dataset_name
from modelworks.data.schemas import IngestMode, IngestResult, PartFile, RebuildResult, VersionOut
from modelworks.data.service import DataService
from modelworks.data.sources.base import ScanContext, Source, write_scan
from modelworks.data.transforms import (
    ENGINE,
    PythonTransformSource,
    SqlTransformSource,
    check_select,
    function_name,
    import_function,
    input_formats,
    rebuild_obstacle,
    sandbox,
    source_sha256,
)

RECIPE_KINDS = ("sql", "clean", "python")


class TransformService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.data = DataService(store)

    # ---- transforms ------------------------------------------------------------------------
    def sql(
        self,
        principal: Principal,
        project: str,
        sql: str,
        output: str,
        *,
        message: str = "",
        mode: IngestMode = "replace",
    ) -> IngestResult:
        """A new version of ``output`` from one SELECT over ``"name@selector"`` refs."""
        check_dataset_name(output)
        refs = check_select(sql)
        inputs, paths, parents = self._inputs(principal, project, refs)
        recipe: dict[str, Any] = {
            "kind": "sql",
            "sql": sql,
            "inputs": inputs,
            "engine": ENGINE,
        }
        source = SqlTransformSource.over(sql, inputs, paths)
        return self._write(principal, project, output, source, recipe, parents, mode, message)

    def clean(
        self,
        principal: Principal,
        project: str,
        ref: str,
        steps: Sequence[CleanStep | Mapping[str, Any]] | Mapping[str, Any],
        output: str | None = None,
        *,
        message: str = "",
    ) -> IngestResult:
        """A new version (of ``output``, default the input's own dataset) after cleaning."""
        parsed = parse_steps(steps)
        version, paths = self.data.read_paths(principal, project, ref)
        target = output or version.dataset
        check_dataset_name(target)
        sql, computed = self._compile(version.ref, paths, parsed, None)
        step_json = [s.model_dump(mode="json") for s in parsed]
        recipe: dict[str, Any] = {
            "kind": "clean",
            "input": version.ref,
            "steps": step_json,
            "computed": computed,
            "engine": ENGINE,
        }
        source = CleanSource.over(version.ref, step_json, sql, paths)
        try:
            return self._write(
                principal, project, target, source, recipe, [version], "replace", message
            )
        except InvalidInput as exc:
            if output is not None or "changes" not in exc.extra:
                raise
            # Cleaning in place met the dataset's schema policy: a new dataset has none yet.
            raise InvalidInput(
                f"{exc.detail} Or write the cleaned rows to another dataset: "
                f"output='{target}-clean' (CLI: --output {target}-clean).",
                **exc.extra,
            ) from None

    def python(
        self,
        principal: Principal,
        project: str,
        fn: Callable[..., Any],
        inputs: Sequence[str],
        output: str,
        *,
        message: str = "",
    ) -> IngestResult:
        """A new version of ``output`` from ``fn(*inputs)``: one pandas DataFrame per input
        (a pyarrow Table or Polars DataFrame where the parameter is annotated so); ``fn``
        returns a pandas or Polars DataFrame or an Arrow table."""
        if not callable(fn):
            raise InvalidInput(f"A Python transform needs a function; got {type(fn).__name__}.")
        check_dataset_name(output)
        refs = [inputs] if isinstance(inputs, str) else list(inputs)
        if not refs:
            raise InvalidInput(
                'A Python transform needs at least one input, e.g. ["churn@latest"].'
            )
        formats = input_formats(fn, len(refs))  # a wrong arity fails before any reading
        resolved = [self.data.read_paths(principal, project, r) for r in refs]
        pinned = {r: v.ref for r, (v, _) in zip(refs, resolved, strict=True)}
        args = [v.ref for v, _ in resolved]
        obstacle = rebuild_obstacle(fn)
        recipe: dict[str, Any] = {
            "kind": "python",
            "function": function_name(fn),
            "source_sha256": source_sha256(fn),
            "inputs": pinned,
            "args": args,
            "takes": formats,
            "rebuildable": obstacle is None,
            "engine": ENGINE,
            "libraries": _libraries(),
        }
        if obstacle is not None:
            recipe["not_rebuildable_because"] = obstacle
        source = PythonTransformSource.calling(fn, pinned, args, [p for _, p in resolved])
        parents = [v for v, _ in resolved]
        result = self._write(
            principal, project, output, source, recipe, parents, "replace", message
        )
        if obstacle is not None and result.version is not None:
            note = (
                f"{result.version.ref} was made, but `modelworks data rebuild` cannot make it "
                f"again: {obstacle}"
            )
            result = result.model_copy(
                update={"message": " ".join(filter(None, [result.message, note]))}
            )
        return result

    # ---- rebuild ---------------------------------------------------------------------------
    def rebuild(
        self, principal: Principal, project: str, ref: str, *, write: bool = False
    ) -> RebuildResult:
        """Run ``ref``'s recipe again on its pinned inputs and compare the bytes.

        With ``write=True`` the rebuilt rows are also stored, as a new version of the same
        dataset with the same recipe.
        """
        version = self.data.get_version(principal, project, ref, with_profile=False)
        recipe = version.recipe
        if recipe is None:
            raise InvalidInput(
                f"{version.ref} was ingested from a source, not made by a recipe; re-ingest it "
                "instead (`modelworks data ingest`)."
            )
        source, parents = self._source_for(principal, project, version, recipe)
        prefix = self._append_prefix(principal, project, version)
        if write:
            if version.mode == "append":
                raise InvalidInput(
                    f"{version.ref} appended rows to {version.dataset}@{version.parent_version}; "
                    "writing it again would append to the latest version instead. Rebuild "
                    "without --write to verify it, or run the transform again with mode append."
                )
            result = self._write(
                principal, project, version.dataset, source, recipe, parents, "replace",
                f"Rebuilt from the recipe of {version.ref}.",
            )  # fmt: skip
            if result.version is None:  # write_version fails rather than make nothing
                raise InvalidInput(f"Rebuilding {version.ref} made no version.")
            files = result.version.files
            written: str | None = result.version.ref
        else:
            files = prefix + self._rebuild_files(source)
            written = None
        return _compare(version, recipe, files, written)

    def _source_for(
        self, principal: Principal, project: str, version: VersionOut, recipe: Mapping[str, Any]
    ) -> tuple[Source, list[VersionOut]]:
        kind = recipe.get("kind")
        if kind == "sql":
            return self._sql_source(principal, project, version, recipe)
        if kind == "clean":
            return self._clean_source(principal, project, recipe)
        if kind == "python":
            return self._python_source(principal, project, version, recipe)
        raise InvalidInput(
            f"{version.ref} has a recipe of kind {kind!r}, which this version of Modelworks "
            f"cannot run (it knows {', '.join(RECIPE_KINDS)}). Upgrade Modelworks."
        )

    def _sql_source(
        self, principal: Principal, project: str, version: VersionOut, recipe: Mapping[str, Any]
    ) -> tuple[Source, list[VersionOut]]:
        sql = str(recipe.get("sql", ""))
        pins = dict(recipe.get("inputs") or {})
        unpinned = [r for r in check_select(sql) if r not in pins]
        if unpinned:
            raise InvalidInput(
                f"The recipe of {version.ref} does not say which versions "
                f"{', '.join(unpinned)} meant, so it cannot be rebuilt exactly."
            )
        paths: dict[str, list[str]] = {}
        parents: list[VersionOut] = []
        for ref, pinned in pins.items():
            v, p = self.data.read_paths(principal, project, pinned)
            paths[ref] = p
            parents.append(v)
        return SqlTransformSource.over(sql, pins, paths), parents

    def _clean_source(
        self, principal: Principal, project: str, recipe: Mapping[str, Any]
    ) -> tuple[Source, list[VersionOut]]:
        steps = parse_steps(recipe.get("steps") or [])
        v, paths = self.data.read_paths(principal, project, str(recipe.get("input", "")))
        sql, _ = self._compile(v.ref, paths, steps, recipe.get("computed") or {})
        step_json = [s.model_dump(mode="json") for s in steps]
        return CleanSource.over(v.ref, step_json, sql, paths), [v]

    def _python_source(
        self, principal: Principal, project: str, version: VersionOut, recipe: Mapping[str, Any]
    ) -> tuple[Source, list[VersionOut]]:
        name = str(recipe.get("function", "?"))
        if not recipe.get("rebuildable"):
            why = recipe.get("not_rebuildable_because") or f"{name} could not be imported again."
            raise InvalidInput(
                f"{version.ref} was made by a Python function that cannot be run again: {why} "
                "Then run the transform again to make a version that can be rebuilt."
            )
        fn = import_function(name)
        now = source_sha256(fn)
        if now != recipe.get("source_sha256"):
            was = str(recipe.get("source_sha256"))[:12]
            raise InvalidInput(
                f"The code of {name} changed since {version.ref} was made (its source hashed to "
                f"{was}, now to {str(now)[:12]}); a rebuild runs only the code that made the "
                "version. Restore that code to rebuild it, or run the transform again to make "
                "a new version from the new code."
            )
        args = [str(a) for a in recipe.get("args") or []]
        resolved = [self.data.read_paths(principal, project, a) for a in args]
        source = PythonTransformSource.calling(
            fn, dict(recipe.get("inputs") or {}), args, [p for _, p in resolved]
        )
        return source, [v for v, _ in resolved]

    # ---- shared steps ----------------------------------------------------------------------
    def _inputs(
        self, principal: Principal, project: str, refs: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, list[str]], list[VersionOut]]:
        """Each ref as written -> its pinned version, its local parts, and the versions."""
        by_case: dict[str, str] = {}
        for ref in refs:
            other = by_case.setdefault(ref.lower(), ref)
            if other != ref:
                raise InvalidInput(
                    f'"{other}" and "{ref}" differ only in case, which DuckDB does not tell '
                    "apart in table names. Write them the same way."
                )
        inputs: dict[str, str] = {}
        paths: dict[str, list[str]] = {}
        parents: list[VersionOut] = []
        for ref in refs:
            v, p = self.data.read_paths(principal, project, ref)
            inputs[ref], paths[ref] = v.ref, p
            parents.append(v)
        return inputs, paths, parents

    def _compile(
        self,
        pinned: str,
        paths: Sequence[str],
        steps: Sequence[CleanStep],
        computed: Mapping[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        box = sandbox(self.store.settings, {pinned: paths})
        try:
            return compile_steps(box, pinned, steps, computed)
        finally:
            box.close()

    def _write(
        self,
        principal: Principal,
        project: str,
        output: str,
        source: Source,
        recipe: dict[str, Any],
        parents: Sequence[VersionOut],
        mode: IngestMode,
        message: str,
    ) -> IngestResult:
        unique = list({p.id: p for p in parents}.values())  # one edge per input version
        return self.data.write_version(
            principal, project, output, source, mode=mode, message=message, parents=unique,
            recipe=recipe, relation="derived_from", threads=1, create=True,
        )  # fmt: skip

    def _append_prefix(
        self, principal: Principal, project: str, version: VersionOut
    ) -> list[PartFile]:
        """An appended version's hash covers the parts it shares with its parent."""
        if version.mode != "append" or not version.parent_version:
            return []
        parent = self.data.get_version(
            principal, project, f"{version.dataset}@{version.parent_version}", with_profile=False
        )
        return list(parent.files)

    def _rebuild_files(self, source: Source) -> list[PartFile]:
        """Run ``source`` as write_version would (one thread, the same writer) into a
        staging folder; return the parts' identities. Nothing is stored."""
        settings = self.store.settings
        stage = self.store.artifacts.staging_dir()
        con = storage.connect(settings, threads=1)
        try:
            ctx = ScanContext(con=con, settings=settings, workdir=stage / "scratch")
            ctx.workdir.mkdir(parents=True, exist_ok=True)
            scan = source.scan(ctx)
            try:
                if scan.relation is None:
                    raise InvalidInput(f"{source.label()} gave nothing to rebuild.")
                scan, parts = write_scan(
                    scan, lambda rel: storage.write_parts(con, rel, stage / "parts")
                )
            except ModelworksError:
                raise
            except duckdb.Error as exc:
                raise InvalidInput(f"Rebuilding {source.label()} failed: {exc}") from None
            finally:
                if scan.close is not None:
                    scan.close()
            return [
                PartFile(sha256=_sha256_file(p), size=p.stat().st_size, rows=storage.part_rows(p))
                for p in parts
            ]
        finally:
            con.close()
            shutil.rmtree(stage, ignore_errors=True)


def _compare(
    version: VersionOut,
    recipe: Mapping[str, Any],
    files: Sequence[PartFile],
    written: str | None,
) -> RebuildResult:
    rebuilt = storage.content_hash(files)
    rows = sum(f.rows for f in files)
    identical = rebuilt == version.content_hash
    stored_as = f" Stored as {written}." if written else ""
    if identical:
        message = (
            f"{version.ref} rebuilt bit for bit from its recipe: {rows:,} rows, content hash "
            f"{rebuilt[:12]}.{stored_as}"
        )
    else:
        rows_note = (
            f"{version.row_count:,} rows were stored, {rows:,} rebuilt"
            if rows != version.row_count
            else f"same row count ({rows:,}), different bytes"
        )
        message = (
            f"{version.ref} did not rebuild identically ({rows_note}; content hash "
            f"{version.content_hash[:12]} stored, {rebuilt[:12]} rebuilt). "
            f"{_why_different(recipe)}{stored_as}"
        )
    return RebuildResult(
        ref=version.ref,
        identical=identical,
        expected_hash=version.content_hash,
        rebuilt_hash=rebuilt,
        rows=rows,
        message=message,
        written=written,
    )


def _why_different(recipe: Mapping[str, Any]) -> str:
    reasons = []
    if recipe.get("engine") and recipe.get("engine") != ENGINE:
        reasons.append(
            f"it was made with {recipe['engine']} and this is {ENGINE}, whose Parquet bytes can "
            "differ"
        )
    libraries = recipe.get("libraries")
    if isinstance(libraries, dict) and libraries != _libraries():
        reasons.append(f"the Python libraries differ (made with {libraries}, now {_libraries()})")
    if reasons:
        return "Likely because " + "; ".join(reasons) + "."
    return (
        "The code and engine are the same, so the recipe or its inputs were changed after the "
        "version was made, or the transform is not deterministic (random(), now(), or a "
        "function that reads anything but its inputs)."
    )


def _libraries() -> dict[str, str]:
    """Versions of what a Python transform's bytes depend on besides DuckDB."""
    found = {"python": platform.python_version()}
    for name in ("pyarrow", "pandas", "polars"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
