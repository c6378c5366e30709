"""In-memory tables (pandas, Polars, Arrow) as a source: ``ws.datasets.ingest(df, "name")``."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import PrivateAttr

from modelworks.core.errors import InvalidInput
from modelworks.data.sources.base import Scan, ScanContext, Source, register_source


def to_arrow_table(data: Any) -> pa.Table:
    """A pyarrow Table from a pandas or Polars DataFrame, an Arrow table or record batches."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        frame: pd.DataFrame = data
        # A named index (set_index("id")) is data and becomes columns; an unnamed one (a
        # RangeIndex, or the row labels a split or filter left behind) carries none.
        keep_index = any(name is not None for name in frame.index.names)
        return pa.Table.from_pandas(frame, preserve_index=keep_index)
    if module == "polars":
        return data.to_arrow()
    raise InvalidInput(
        f"Cannot ingest a {type(data).__name__}: pass a pandas or Polars DataFrame, a pyarrow "
        "Table, or a source such as CsvSource(path=...)."
    )


@register_source
class FrameSource(Source):
    """Rows handed over in memory; only their shape is stored with the version."""

    kind: Literal["frame"] = "frame"
    origin: str = "dataframe"
    rows: int = 0
    columns: list[str] = []
    _table: pa.Table | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, data: Any) -> FrameSource:
        table = to_arrow_table(data)
        module = type(data).__module__.split(".")[0]
        src = cls(origin=module, rows=table.num_rows, columns=list(table.column_names))
        src._table = table
        return src

    def scan(self, ctx: ScanContext) -> Scan:
        if self._table is None:
            raise InvalidInput(
                "A frame source holds its rows in memory and cannot be read again; "
                "ingest the DataFrame itself."
            )
        return Scan(relation=ctx.con.from_arrow(self._table))

    def label(self) -> str:
        return f"{self.origin} frame ({self.rows} rows)"
