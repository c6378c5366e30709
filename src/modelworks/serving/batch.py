"""Batch inference: score Parquet or CSV files with a model package, a batch at a time.

:func:`predict_batch` reads the input with a pyarrow dataset scanner, ``batch_rows`` rows
at a time, so the whole input is never in memory: at most ``2 x workers`` batches are in
flight. Batches are scored by a pool of threads (the model libraries release the GIL while
they predict: LightGBM, XGBoost and scikit-learn's tree ensembles run in native code), and
the results are written in input order by one Parquet writer into a temporary file that is
renamed into place at the end, so a failed run leaves no output behind.

Before any row is scored, the input's columns are checked against the model's signature
(every missing and unexpected column named at once) and a few rows are scored to learn the
output schema, so a mismatch fails in a second, not an hour in.

With a Ray address (``ray_address=`` or ``MODELWORKS_RAY_ADDRESS``) the same work runs on
Ray Data: ``read_parquet`` -> ``map_batches`` over a pool of actors that each receive the
model once -> a writer on the driver fed by the cluster, in order (the output path is the
driver's). The output is the same: the same columns, types, rows and order.

Output columns: the ``keep_columns`` (ids and the like, carried through unchanged), then
``prediction`` (class labels for classifiers, values for regressors) and, for classifiers,
``probability_<class>`` for each class in the model's class order.

>>> pkg = load_package("churn-model")                                     # doctest: +SKIP
>>> predict_batch(pkg, "data/customers/*.parquet", "scores.parquet",
...               keep_columns=["customer_id"])                           # doctest: +SKIP
BatchResult(rows=1000000, seconds=7.9, output='scores.parquet', ...)
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from modelworks.core.errors import AlreadyExists, InvalidInput, NotFound

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.core.store import Store
    from modelworks.training.package import ModelPackage

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "BatchResult",
    "BatchSource",
    "Columns",
    "OutputFormat",
    "predict_batch",
    "predict_to_dataset",
]

DEFAULT_BATCH_ROWS = 65_536
PREDICTION = "prediction"
PROBABILITY = "probability"
OUTPUTS = (PREDICTION, PROBABILITY)
SAMPLE_ROWS = 64  # scored first, to check types and learn the output schema
PART_NAME = "part-00000"
CSV_BLOCK = 1 << 20

OutputFormat = Literal["parquet", "csv"]
Columns = Sequence[Literal["prediction", "probability"]]
BatchSource: TypeAlias = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | pds.Dataset

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_OUTPUT_SUFFIXES: dict[str, OutputFormat] = {".parquet": "parquet", ".pq": "parquet",
                                             ".csv": "csv"}  # fmt: skip
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class BatchResult:
    """What a batch prediction did.

    ``output`` is where the predictions are: the file or folder written, or the dataset
    version made by :func:`predict_to_dataset` (``"scores@1"``); ``files`` the files that
    hold them, in row order. ``batches`` is the number of model calls (None on Ray Data,
    where the cluster splits the work).
    """

    rows: int
    seconds: float
    output: str
    files: list[str]
    batches: int | None = None
    executor: Literal["local", "ray"] = "local"
    columns: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# ---- input -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Input:
    dataset: pds.Dataset
    files: list[str]
    format: Literal["parquet", "csv"]
    delimiter: str
    label: str
    own: bool = True  # False for a dataset object the caller made: read it as given


def _expand(source: str | os.PathLike[str]) -> list[str]:
    """The files a path names: itself, a folder's data files (recursive), or a glob's."""
    text = os.fspath(source)
    if _GLOB_CHARS & set(text):
        found = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not found:
            raise NotFound(f"No file matches {text!r}. Check the pattern and the folder.")
        return found
    path = Path(text)
    if path.is_file():
        return [text]
    if path.is_dir():
        files = sorted(
            str(p)
            for p in path.rglob("*")
            # hidden and marker names (.tmp folders, _SUCCESS) are not data
            if p.is_file() and not any(n.startswith((".", "_")) for n in p.relative_to(path).parts)
        )
        data = [f for f in files if f.endswith(_PARQUET_SUFFIXES)]
        data = data or [f for f in files if Path(f).suffix.lower() in _CSV_DELIMITERS]
        if not data:
            raise NotFound(
                f"The folder {text} holds no .parquet, .csv or .tsv files; point at the "
                "files themselves, or at a folder that holds them."
            )
        return data
    raise NotFound(f"There is no file or folder at {text}. Check the path.")


def _open_input(source: BatchSource) -> _Input:
    """A pyarrow dataset over ``source`` (for its schema and row count; :func:`_read` reads
    the rows), and the file list that Ray Data reads."""
    if isinstance(source, pds.Dataset):
        files = list(getattr(source, "files", []) or [])
        label = files[0] if len(files) == 1 else f"the dataset of {len(files)} files"
        if isinstance(source.format, pds.CsvFileFormat):
            delimiter = source.format.parse_options.delimiter
            return _Input(source, files, "csv", delimiter, label, own=False)
        return _Input(source, files, "parquet", ",", label, own=False)
    if isinstance(source, (str, os.PathLike)):
        files = [os.path.abspath(f) for f in _expand(source)]  # Ray workers run elsewhere
        label = os.fspath(source)
    else:
        files = [os.path.abspath(os.fspath(p)) for p in source]
        if not files:
            raise InvalidInput("No input files were given; pass a path, a folder or a glob.")
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise NotFound(f"Input file(s) not found: {', '.join(missing[:5])}.")
        label = files[0] if len(files) == 1 else f"{len(files)} input files"
    suffix = Path(files[0]).suffix.lower()
    try:
        if suffix in _CSV_DELIMITERS:
            delimiter = _CSV_DELIMITERS[suffix]
            csv_format = pds.CsvFileFormat(
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
            )
            return _Input(pds.dataset(files, format=csv_format), files, "csv", delimiter, label)
        scan = pds.ParquetFragmentScanOptions(pre_buffer=False)
        parquet_format = pds.ParquetFileFormat(default_fragment_scan_options=scan)
        return _Input(pds.dataset(files, format=parquet_format), files, "parquet", ",", label)
    except (pa.ArrowInvalid, OSError) as exc:
        kind = "CSV" if suffix in _CSV_DELIMITERS else "Parquet"
        raise InvalidInput(
            f"Cannot read {label} as {kind}: {exc}. Check that the files are {kind} (a name "
            "ending in .csv or .tsv is read as CSV, anything else as Parquet)."
        ) from None


# ---- the plan: which columns go in, which come out ----------------------------------------
@dataclass(frozen=True)
class _Plan:
    features: list[str]
    keep: list[str]
    read: list[str]
    prediction: bool
    probability: bool
    classes: list[Any] | None
    schema: pa.Schema | None = None

    @property
    def names(self) -> list[str]:
        names = list(self.keep)
        if self.prediction:
            names.append(PREDICTION)
        if self.probability:
            names += [f"{PROBABILITY}_{c}" for c in self.classes or []]
        return names


def _plan(
    pkg: ModelPackage,
    schema: pa.Schema,
    label: str,
    columns_out: Columns | None,
    keep: Sequence[str],
    ignore: Sequence[str],
) -> _Plan:
    classifier = pkg.task in ("binary", "multiclass") and bool(pkg.classes)
    wanted = list(columns_out) if columns_out is not None else (
        [PREDICTION, PROBABILITY] if classifier else [PREDICTION]
    )  # fmt: skip
    unknown = [c for c in wanted if c not in OUTPUTS]
    if unknown or not wanted:
        raise InvalidInput(f"columns_out takes 'prediction' and/or 'probability'; got {wanted!r}.")
    if PROBABILITY in wanted and not classifier:
        raise InvalidInput(
            f"This is a {pkg.task} model, so it has no class probabilities; ask for "
            "columns_out=['prediction'] only."
        )
    names = list(schema.names)
    keep = list(dict.fromkeys(keep))
    absent = [c for c in keep if c not in names]
    if absent:
        raise InvalidInput(
            f"keep_columns {', '.join(map(repr, absent))} are not columns of {label}; it has "
            f"{', '.join(map(repr, names[:30]))}."
        )
    signature = pkg.signature
    if signature is not None and signature.is_tensor:
        raise InvalidInput(
            "Batch prediction reads tables, and this model takes one array (a tensor "
            f"signature {signature.summary()}); score it with package.predict(array) instead."
        )
    if signature is None:
        features = [c for c in names if c not in keep and c not in ignore]
        missing: list[str] = []
        unexpected: list[str] = []
    else:
        features = signature.input_names
        missing = [c for c in features if c not in names]
        unexpected = [c for c in names if c not in features and c not in keep and c not in ignore]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing columns: {', '.join(map(repr, missing))}")
        if unexpected:
            problems.append(f"unexpected columns: {', '.join(map(repr, unexpected))}")
        assert signature is not None  # only a signature names missing columns
        raise InvalidInput(
            f"{label} does not match the model's signature: {'; '.join(problems)}. The model "
            f"expects {signature.summary(max_columns=20)}. Carry columns such as ids into the "
            "output with keep_columns=[...] (CLI: --keep) and leave others out with "
            "ignore_columns=[...] (CLI: --ignore).",
            missing=missing,
            unexpected=unexpected,
        )
    plan = _Plan(
        features=features,
        keep=keep,
        read=list(dict.fromkeys([*features, *keep])),
        prediction=PREDICTION in wanted,
        probability=PROBABILITY in wanted,
        classes=list(pkg.classes) if classifier and pkg.classes else None,
    )
    clash = [c for c in keep if c in plan.names[len(keep) :]]
    if clash:
        raise InvalidInput(
            f"keep_columns {', '.join(map(repr, clash))} would clash with the prediction "
            "columns of the same name; rename them in the input first."
        )
    return plan


def _labels(classes: list[Any]) -> np.ndarray[Any, Any]:
    arr = np.asarray(classes)
    return arr if arr.dtype.kind in "biufUS" else np.asarray(classes, dtype=object)


def _score(pkg: ModelPackage, plan: _Plan, batch: pa.Table | pa.RecordBatch) -> pa.Table:
    """One batch in, its output rows out: keep columns, prediction, probabilities."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    frame = table.select(plan.features).to_pandas()
    columns: dict[str, Any] = {k: table.column(k) for k in plan.keep}
    if plan.probability:
        proba = np.asarray(pkg.predict_proba(frame), dtype=np.float64)
        classes = plan.classes or []
        if proba.ndim != 2 or proba.shape[1] != len(classes):
            raise InvalidInput(
                f"The model returned probabilities of shape {proba.shape} for {len(classes)} "
                "classes; score with columns_out=['prediction'] instead."
            )
        if plan.prediction:
            # The class of highest probability: what predict() returns, without scoring twice.
            columns[PREDICTION] = pa.array(_labels(classes)[np.argmax(proba, axis=1)])
        for i, cls in enumerate(classes):
            columns[f"{PROBABILITY}_{cls}"] = pa.array(proba[:, i])
    else:
        predicted = np.asarray(pkg.predict(frame))
        if predicted.ndim != 1:
            raise InvalidInput(
                f"The model returns {predicted.shape[1:]} values a row; batch prediction writes "
                "one prediction a row. Score it with package.predict(frame) instead."
            )
        columns[PREDICTION] = pa.array(predicted, from_pandas=True)
    out = pa.table(columns)
    if plan.schema is not None and out.schema != plan.schema:
        out = out.cast(plan.schema)
    return out


def _output_schema(pkg: ModelPackage, plan: _Plan, inp: _Input) -> _Plan:
    """Score the first rows: types are checked now, and they fix the output schema."""
    # Read like the run reads (a dataset's head() decodes whole row groups, and more).
    reader = _read(inp, plan.read, SAMPLE_ROWS, 1)
    try:
        sample = next(_rebatch(reader, SAMPLE_ROWS), None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"Cannot read {inp.label}: {exc}.") from None
    finally:
        reader.close()
    if sample is None or sample.num_rows == 0:
        raise InvalidInput(f"{inp.label} has no rows, so there is nothing to predict.")
    try:
        scored = _score(pkg, plan, sample)
    except InvalidInput as exc:
        raise InvalidInput(f"{inp.label}: {exc.detail}", **exc.extra) from None
    fields = [
        pa.field(f.name, pa.float64()) if f.name.startswith(f"{PROBABILITY}_") else f
        for f in scored.schema
    ]
    fields[: len(plan.keep)] = [inp.dataset.schema.field(k) for k in plan.keep]
    return replace(plan, schema=pa.schema(fields))


# ---- output ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Output:
    path: Path  # where the predictions end up
    single_file: bool
    format: OutputFormat
    tmp: Path  # written first, renamed to ``path`` at the end

    @property
    def file(self) -> Path:
        """The file the local writer writes: the temp file, or the part in the temp folder."""
        if self.single_file:
            return self.tmp
        return self.tmp / f"{PART_NAME}.{self.format}"


def _output(output: str | os.PathLike[str], fmt: OutputFormat, overwrite: bool) -> _Output:
    if fmt not in ("parquet", "csv"):
        raise InvalidInput(f"output_format must be 'parquet' or 'csv'; got {fmt!r}.")
    path = Path(output).expanduser().absolute()
    suffix = path.suffix.lower()
    single = suffix in _OUTPUT_SUFFIXES
    if single and _OUTPUT_SUFFIXES[suffix] != fmt:
        raise InvalidInput(
            f"The output {path.name} names a {_OUTPUT_SUFFIXES[suffix]} file but "
            f"output_format is {fmt!r}; make them agree."
        )
    if path.exists() and not overwrite:
        raise AlreadyExists(
            f"{path} already exists; choose another output, delete it, or pass "
            "overwrite=True (CLI: --overwrite)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    if not single:
        tmp.mkdir()
    return _Output(path, single, fmt, tmp)


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _publish(out: _Output) -> list[str]:
    """Move the finished output into place in one rename (replacing an older one)."""
    old = None
    if out.path.exists():  # overwrite=True was checked before any work
        old = out.path.parent / f".{out.path.name}.{uuid.uuid4().hex[:12]}.old"
        os.rename(out.path, old)
    os.rename(out.tmp, out.path)
    if old is not None:
        _discard(old)
    if out.single_file:
        return [str(out.path)]
    return sorted(str(p) for p in out.path.iterdir() if p.is_file())


class _Writer:
    """Parquet or CSV, one table at a time, in one file with one schema."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: OutputFormat) -> None:
        self._parquet = pq.ParquetWriter(path, schema) if fmt == "parquet" else None
        self._csv = pacsv.CSVWriter(path, schema) if fmt == "csv" else None

    def write(self, table: pa.Table) -> None:
        if self._parquet is not None:
            self._parquet.write_table(table)  # one row group a batch
        elif self._csv is not None:
            self._csv.write_table(table)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()


# ---- running -----------------------------------------------------------------------------
def _rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of ``rows`` rows (the last may be shorter) from batches of any size.

    A scanner's batches end at row-group and file boundaries; small row groups would mean
    many small model calls. Slices are zero-copy, so this holds at most one batch more.
    """
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        held.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            held, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(held)


PARQUET_BUFFER = 1 << 20


def _read(
    inp: _Input, columns: list[str], batch_rows: int, workers: int
) -> Generator[pa.RecordBatch, None, None]:
    """The input's batches, in order, holding about ``batch_rows`` rows at a time.

    Parquet files are read one after another with ``ParquetFile.iter_batches`` on a
    buffered stream: it decodes a batch's pages as it goes, so memory follows the batch
    size, not the row-group size (a dataset scanner decodes whole row groups, and reads
    ahead of a slow consumer without bound). CSV files are streamed block by block with the
    first file's column types; a dataset object the caller made is read by its scanner.
    """
    if inp.format == "csv" and inp.own:
        types = {c: inp.dataset.schema.field(c).type for c in columns}  # as in the first file
        for path in inp.files:
            # Arrow's CSV reader reads up to 32 blocks ahead of the batches it hands out:
            # blocks of 1 MiB (its default) keep that to 32 MiB, whatever the batch size.
            try:
                reader = pacsv.open_csv(
                    path,
                    read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
                    parse_options=pacsv.ParseOptions(delimiter=inp.delimiter),
                    convert_options=pacsv.ConvertOptions(
                        include_columns=columns, column_types=types
                    ),
                )
            except (KeyError, pa.ArrowInvalid) as exc:
                raise InvalidInput(
                    f"Cannot read {path} like the first file: {exc}. Every input file needs "
                    "the model's columns, with the same types."
                ) from None
            yield from reader
        return
    if inp.format != "parquet" or not inp.own:
        scanner = inp.dataset.scanner(
            columns=columns, batch_size=batch_rows, batch_readahead=max(2, workers),
            fragment_readahead=1,
        )  # fmt: skip
        yield from scanner.to_batches()
        return
    wanted = pa.schema([inp.dataset.schema.field(c) for c in columns])
    for path in inp.files:
        file = pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_BUFFER)
        names = file.schema_arrow.names
        missing = [c for c in columns if c not in names]
        if missing:
            raise InvalidInput(
                f"{path} lacks the column(s) {', '.join(map(repr, missing))} that the first "
                "file has; every input file needs the model's columns."
            )
        for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch if batch.schema == wanted else batch.select(columns).cast(wanted)


ProgressCallback: TypeAlias = Callable[[int, int | None], None]


class _Progress:
    """A rich progress bar over rows on stderr (or nothing), and the caller's callback."""

    def __init__(
        self,
        enabled: bool,
        total: int | None,
        label: str,
        callback: ProgressCallback | None = None,
    ) -> None:
        self._bar: Any = None
        self._callback = callback
        self._total = total
        self._done = 0
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]Predicting[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._bar.add_task(label, total=total)
        self._bar.start()

    def advance(self, rows: int) -> None:
        self._done += rows
        if self._bar is not None:
            self._bar.advance(self._task, rows)
        if self._callback is not None:
            self._callback(self._done, self._total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _total_rows(inp: _Input) -> int | None:
    """Parquet footers say how many rows there are; a CSV must be read to know."""
    if inp.format != "parquet":
        return None
    try:
        return int(inp.dataset.count_rows())
    except (pa.ArrowInvalid, OSError):
        return None


def _share_cores(threads: int) -> None:
    """Give this worker thread's OpenMP regions ``threads`` threads (cores / workers).

    LightGBM, XGBoost and scikit-learn's tree models predict with OpenMP teams as large as
    the machine; ``workers`` of them at once would put workers x cores threads on the
    cores, and OpenMP threads spin while they wait. The OpenMP thread count is a per-thread
    setting, so this affects only the pool's own threads.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, leave OpenMP as it is
        return
    threadpool_limits(limits=threads, user_api="openmp")


def _run_local(
    pkg: ModelPackage,
    plan: _Plan,
    inp: _Input,
    out: _Output,
    batch_rows: int,
    workers: int,
    progress: bool,
    on_progress: ProgressCallback | None = None,
) -> tuple[int, int]:
    """Score on a thread pool, writing results in input order; returns (rows, batches)."""
    assert plan.schema is not None  # set by _output_schema
    window = 2 * workers  # batches in flight: the memory bound
    label = Path(inp.label).name or inp.label
    bar = _Progress(progress, _total_rows(inp), label, on_progress)
    writer = _Writer(out.file, plan.schema, out.format)
    rows = batches = 0
    pending: deque[Future[pa.Table]] = deque()
    pool = ThreadPoolExecutor(
        workers,
        thread_name_prefix="modelworks-batch",
        initializer=_share_cores,
        initargs=(max(1, _default_workers() // workers),),
    )

    def drain(limit: int) -> None:
        nonlocal rows, batches
        while len(pending) > limit:
            table = pending.popleft().result()
            writer.write(table)
            rows += table.num_rows
            batches += 1
            bar.advance(table.num_rows)

    try:
        for table in _rebatch(_read(inp, plan.read, batch_rows, workers), batch_rows):
            pending.append(pool.submit(_score, pkg, plan, table))
            drain(window - 1)
        drain(0)
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"Cannot read {inp.label}: {exc}.") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
        bar.close()
    return rows, batches


class _RayScorer:
    """A Ray Data actor: gets the model once, then scores every batch it is given."""

    def __init__(self, package: list[Any], plan: _Plan) -> None:
        import ray

        # The ref travels inside a list so Ray hands it over as is; fetched once per actor.
        self.pkg: ModelPackage = ray.get(package[0])
        self.plan = plan

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _score(self.pkg, self.plan, batch)


def _run_ray(
    pkg: ModelPackage,
    plan: _Plan,
    inp: _Input,
    out: _Output,
    batch_rows: int,
    workers: int | None,
    address: str,
    progress: bool,
    on_progress: ProgressCallback | None = None,
) -> tuple[int, int | None]:
    """The same work on Ray Data; returns (rows, None): the cluster splits the batches."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InvalidInput(
            "Running on Ray needs Ray: pip install 'modelworks[ray]', or leave ray_address "
            "(and MODELWORKS_RAY_ADDRESS) unset to predict in this process."
        ) from None
    if not inp.files:
        raise InvalidInput(
            "Ray Data reads files: give predict_batch a path, folder or glob rather than a "
            "pyarrow dataset object when running on Ray."
        )
    assert plan.schema is not None  # set by _output_schema
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True  # rows come out in input order
    ctx.enable_progress_bars = progress
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        concurrency = workers or max(1, int(cpus) - 1)
        # Actors that reserved every CPU would starve Ray Data's own read and write tasks
        # (the run would hang): together they leave one CPU free, each reserves at most one.
        actor_cpus = max(0.0, min(1.0, (cpus - 1.0) / concurrency))
        if inp.format == "csv":
            data = ray.data.read_csv(
                inp.files,
                file_extensions=None,
                parse_options=pacsv.ParseOptions(delimiter=inp.delimiter),
                convert_options=pacsv.ConvertOptions(include_columns=plan.read),
            )
        else:
            data = ray.data.read_parquet(inp.files, file_extensions=None)
            data = data.select_columns(plan.read)  # pushed down into the read
        scored = data.map_batches(
            _RayScorer,
            fn_constructor_kwargs={"package": [ray.put(pkg)], "plan": plan},
            batch_size=batch_rows,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=actor_cpus,
        )
        # The driver writes what the actors return, in order: the output path is this
        # machine's (a worker on another node writing "/data/out" would fill its own disk),
        # and Ray Data's own writers gave no row order across files (seen in CI).
        writer = _Writer(out.file, plan.schema, out.format)
        rows = 0
        tracker = _Progress(False, _total_rows(inp), inp.label, on_progress)
        try:
            for block in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                table = cast(pa.Table, block)
                if table.num_rows:
                    writer.write(table.cast(plan.schema))
                    rows += table.num_rows
                    tracker.advance(table.num_rows)
        finally:
            writer.close()
        return rows, None
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        if started:
            ray.shutdown()


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def predict_batch(
    model: ModelPackage,
    source: BatchSource,
    output: str | os.PathLike[str],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    workers: int | None = None,
    columns_out: Columns | None = None,
    keep_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    output_format: OutputFormat = "parquet",
    overwrite: bool = False,
    progress: bool = True,
    ray_address: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> BatchResult:
    """Score every row of ``source`` with ``model`` and write the predictions to ``output``.

    ``source`` is a Parquet or CSV/TSV file, a folder of them, a glob (``data/*.parquet``),
    a list of files, or a ``pyarrow.dataset.Dataset``; it is read ``batch_rows`` rows at a
    time and scored by ``workers`` threads (default: one per core). ``output`` ending in
    ``.parquet`` (or ``.csv``) is one file; any other name is a folder of part files.
    ``columns_out`` picks ``"prediction"`` and/or ``"probability"`` (one
    ``probability_<class>`` column per class; both by default for classifiers).
    ``keep_columns`` are copied through (ids), ``ignore_columns`` are input columns the model
    does not take (a label); any other column the signature does not name is an error (a
    model saved without a signature gets every column not kept or ignored).

    ``ray_address`` (default ``MODELWORKS_RAY_ADDRESS``; ``""`` forces this process) runs
    the work on Ray Data; ``workers`` is then the number of actors (default: the cluster's
    CPUs). The input paths must be readable, and the output writable, where Ray runs.
    ``on_progress(rows_done, total_rows)`` is called as batches are written (``total_rows``
    is None when the input does not say, as for CSV).
    """
    from modelworks.core.config import get_settings

    started = time.perf_counter()
    if batch_rows < 1:
        raise InvalidInput(f"batch_rows must be at least 1; got {batch_rows}.")
    if workers is not None and workers < 1:
        raise InvalidInput(f"workers must be at least 1; got {workers}.")
    address = get_settings().ray_address if ray_address is None else ray_address
    inp = _open_input(source)
    plan = _plan(model, inp.dataset.schema, inp.label, columns_out, keep_columns, ignore_columns)
    out = _output(output, output_format, overwrite)
    try:
        plan = _output_schema(model, plan, inp)
        if address:
            rows, batches = _run_ray(
                model, plan, inp, out, batch_rows, workers, address, progress, on_progress
            )
        else:
            rows, batches = _run_local(
                model, plan, inp, out, batch_rows, workers or _default_workers(), progress,
                on_progress,
            )  # fmt: skip
        files = _publish(out)
    except BaseException:
        _discard(out.tmp)
        raise
    return BatchResult(
        rows=rows,
        seconds=time.perf_counter() - started,
        output=str(out.path),
        files=files,
        batches=batches,
        executor="ray" if address else "local",
        columns=plan.names,
    )


# ---- registry and datasets ---------------------------------------------------------------
def predict_to_dataset(
    store: Store,
    principal: Principal,
    project: str,
    ref: str,
    dataset_ref: str,
    output_dataset: str,
    *,
    message: str = "",
    **options: Any,
) -> tuple[BatchResult, str]:
    """Score a dataset version with a registered model version into a new dataset version.

    ``ref`` is a model version (``churn@champion``), ``dataset_ref`` the rows to score
    (``customers@7``); the predictions (with ``keep_columns``) become the next version of
    ``output_dataset``, made whole or not at all by the data service, with the scored
    version as its lineage parent. The model version is linked to it too
    (``model_version --scored--> dataset_version``), and an audit record
    ``model.batch_predict`` says who scored what. ``options`` are :func:`predict_batch`'s.
    Returns the result (``output`` is the new version's ref) and that ref.
    """
    from modelworks.core import audit, lineage
    from modelworks.core.auth import Role
    from modelworks.data.refs import check_dataset_name
    from modelworks.data.service import DataService, version_node
    from modelworks.data.source_policy import upload_root
    from modelworks.data.sources.files import ParquetSource
    from modelworks.governance.access import require_project
    from modelworks.registry.evaluations import EvaluationService

    started = time.perf_counter()
    check_dataset_name(output_dataset)
    for name in ("output_format", "output", "overwrite"):
        if name in options:
            raise InvalidInput(f"predict_to_dataset writes Parquet itself; leave out {name}=.")
    with store.read() as s:  # fail before the work, not after it
        require_project(s, principal, project, Role.EDITOR, "Writing predictions to a dataset")
    version, pkg = EvaluationService(store).load(principal, project, ref)
    data = DataService(store)
    scored, paths = data.read_paths(principal, project, dataset_ref)
    # Under the upload folder: the one place a server lets any caller's file source read.
    staging = Path(upload_root(store.settings))
    staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="batch-", dir=staging))
    try:
        result = predict_batch(pkg, paths, work / "predictions.parquet", **options)
        written = data.write_version(
            principal,
            project,
            output_dataset,
            ParquetSource(path=result.output),
            parents=[scored],
            relation="derived_from",
            message=message or f"Predictions of {version.ref} on {scored.ref}.",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    made = written.version
    if made is None:  # write_version raises rather than make nothing; never None here
        raise InvalidInput(f"Scoring {scored.ref} made no version of {output_dataset!r}.")
    with store.transaction() as s:
        proj = require_project(s, principal, project, Role.EDITOR, "Writing predictions")
        lineage.record(
            s, proj.id, lineage.Node("model_version", version.id, version.ref),
            version_node(made.dataset, made), "scored",
            {"input": scored.ref, "rows": result.rows, "columns": result.columns},
        )  # fmt: skip
        audit.record(
            s, principal, "model.batch_predict", "model_version", version.id,
            project_id=proj.id,
            changes={"input": scored.ref, "output": made.ref, "rows": result.rows,
                     "executor": result.executor},
        )  # fmt: skip
    _, parts = data.read_paths(principal, project, made.ref)
    final = replace(result, output=made.ref, files=parts, seconds=time.perf_counter() - started)
    return final, made.ref
