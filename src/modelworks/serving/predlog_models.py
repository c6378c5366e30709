"""Tables of the prediction log: the Parquet files that hold logged predictions, and the
ground truth sent back for them.

The predictions themselves are not rows here: each flush of the log writes one Parquet file
per (deployment, hour) into the content-addressed artifact store, and a file exists for
readers only once its row is committed in ``prediction_log_files``. An object in the store
without a row (a crash between the two steps) is invisible and harmless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelworks.core.database import Base, JSONType, UTCDateTime
from modelworks.core.ids import new_id, utcnow


class PredictionLogFile(Base):
    """One Parquet file of logged predictions: one deployment, one UTC hour."""

    __tablename__ = "prediction_log_files"
    __table_args__ = (Index("ix_prediction_log_files_deployment_hour", "deployment", "hour"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id"), nullable=True, index=True
    )
    deployment: Mapped[str] = mapped_column(String(100), nullable=False)
    # The UTC hour the file's predictions fall in (minutes, seconds and microseconds zero).
    hour: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    # The earliest and latest prediction time in the file: a window read opens a file only
    # when [min_ts, max_ts] overlaps the window.
    min_ts: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    max_ts: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PredictionFeedback(Base):
    """The ground truth for one prediction; a second one for the same request replaces it."""

    __tablename__ = "prediction_feedback"
    __table_args__ = (UniqueConstraint("deployment", "request_id"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    deployment: Mapped[str] = mapped_column(String(100), nullable=False)
    request_id: Mapped[str] = mapped_column(String(200), nullable=False)
    # {"value": <the ground truth>}: wrapped because SQLite's JSON column has numeric
    # affinity and would hand a bare number back as a number rather than JSON text.
    ground_truth: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # When the outcome was observed (the caller's time, default: when it was recorded).
    ts: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
