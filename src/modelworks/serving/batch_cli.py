"""``modelworks predict``: batch inference from the shell.

Scores a file, folder, glob or dataset version with a registered model version (or a
package folder) and writes the predictions to a file, a folder, or a new dataset version
(``dataset:NAME``). It goes through the SDK (``mw.connect()``): on the local store every
form works; against a server (MODELWORKS_URL) the model and the dataset parts are
downloaded and scored on this machine, and the output must be a path.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from modelworks.core.errors import InvalidInput
from modelworks.serving.batch import DEFAULT_BATCH_ROWS, BatchResult

DATASET_PREFIX = "dataset:"
_PATH_SUFFIXES = (".parquet", ".pq", ".parq", ".csv", ".tsv")


def _is_path(text: str) -> bool:
    """A path (existing, a glob, or a data file name) rather than a dataset reference."""
    return (
        os.path.exists(text)
        or any(ch in text for ch in "*?[")
        or os.sep in text
        or text.lower().endswith(_PATH_SUFFIXES)
    )


def _load_model(ws: Any, ref: str, trust: bool) -> tuple[Any, Any]:
    """(package, registry version or None): a package folder, or a registered version."""
    from modelworks.training.package import load_package

    if (Path(ref) / "model.yaml").is_file():
        return load_package(ref, trust=trust), None
    return ws.models.load(ref, trust=trust), ws.models.version(ref)


def _print_result(result: BatchResult) -> None:
    from modelworks.cli.output import print_record

    print_record(
        "Predicted",
        {
            "rows": result.rows,
            "seconds": round(result.seconds, 2),
            "rows/s": round(result.rows_per_second),
            "output": result.output,
            "columns": ", ".join(result.columns),
            "files": len(result.files),
            "executor": result.executor,
        },
    )


def predict(
    ref: Annotated[
        str,
        typer.Argument(
            help="The model: a registered version (NAME@VERSION, NAME@ALIAS) or a package folder."
        ),
    ],
    input: Annotated[
        str,
        typer.Argument(
            help="The rows to score: a Parquet or CSV file, a folder, a glob "
            "('data/*.parquet'), or a dataset version (customers@3)."
        ),
    ],
    output: Annotated[
        str,
        typer.Argument(
            help="Where the predictions go: a .parquet or .csv file, a folder (of part "
            "files), or dataset:NAME for a new version of dataset NAME."
        ),
    ],
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep", "-k", help="An input column to copy to the output (an id); repeatable."
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="An input column the model does not take (a label); repeatable."),
    ] = None,
    probability: Annotated[
        bool,
        typer.Option(
            "--probability/--no-probability",
            help="Write probability_<class> columns for classifiers.",
        ),
    ] = True,
    batch_rows: Annotated[
        int, typer.Option(min=1, help="Rows read and scored at a time: the memory bound.")
    ] = DEFAULT_BATCH_ROWS,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Threads scoring at once (default: one per core); Ray actors."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Run on this Ray cluster with Ray Data (default: MODELWORKS_RAY_ADDRESS; "
            "'' for this process)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output file or folder.")
    ] = False,
    message: Annotated[str, typer.Option(help="Message of the new dataset version.")] = "",
    trust: Annotated[
        bool,
        typer.Option(
            "--trust", help="Allow a model that runs code on load (a pickle); yours only."
        ),
    ] = False,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Project name or id.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the API's shapes) instead of a table.")
    ] = False,
) -> None:
    """Score a file, folder or dataset version with a model, in bounded batches.

    Input columns are checked against the model's signature before any row is scored;
    --keep copies columns such as ids to the output and --ignore leaves out columns the
    model does not take. The output appears whole or not at all. With dataset:NAME the
    predictions become a new version of NAME, linked in the lineage to the model version
    and the dataset version scored.

    Example:
      modelworks predict churn@champion customers@latest scores.parquet --keep customer_id
      modelworks predict churn@3 'exports/*.csv' scores/ --workers 8
      modelworks predict churn@champion customers@7 dataset:churn-scores -k customer_id
    """
    import modelworks as mw
    from modelworks.cli.output import emit
    from modelworks.serving.batch import predict_batch, predict_to_dataset

    options: dict[str, Any] = {
        "batch_rows": batch_rows,
        "workers": workers,
        "keep_columns": list(keep or []),
        "ignore_columns": list(ignore or []),
        "columns_out": None if probability else ["prediction"],
        "progress": not as_json,
        "ray_address": ray_address,
    }
    to_dataset = output.startswith(DATASET_PREFIX)
    from_path = _is_path(input)
    with mw.connect(project=project) as ws:
        if to_dataset:
            name = output.removeprefix(DATASET_PREFIX)
            if from_path:
                raise InvalidInput(
                    "Writing to a dataset scores a dataset version, so that the lineage says "
                    f"what was scored: ingest {input} first (`modelworks data ingest`), then "
                    "pass the version (NAME@N) as the input."
                )
            backend: Any = ws.models.backend  # the embedded one holds the store
            store = getattr(backend, "store", None)
            if store is None or (Path(ref) / "model.yaml").is_file():
                raise InvalidInput(
                    "dataset:NAME outputs need a registered model version and the local store "
                    "(they record lineage); on a server, write to a file and ingest it with "
                    "`modelworks data ingest`."
                )
            result, _ = predict_to_dataset(
                store, backend.principal, ws.project, ref, input, name, message=message,
                **options,
            )  # fmt: skip
        else:
            pkg, _ = _load_model(ws, ref, trust)
            source: Any = input if from_path else ws.datasets.get(input).paths()
            result = predict_batch(pkg, source, output, overwrite=overwrite, **options)
    emit(dataclasses.asdict(result), as_json, lambda: _print_result(result))
