"""Request and response shapes: the Open Inference Protocol (KServe V2) over REST, and the
plain JSON ``/deployments/{name}/predict`` API.

The OIP shapes follow https://github.com/kserve/open-inference-protocol (REST): tensors are
``{"name", "shape", "datatype", "data"}`` with ``data`` flat in row-major order (nested
lists are accepted on input). Datatypes map from the signature's Arrow type names with
:func:`datatype_of`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DATATYPES",
    "InferenceRequest",
    "InferenceResponse",
    "LiveResponse",
    "MetadataTensor",
    "ModelMetadataResponse",
    "ModelReadyResponse",
    "PredictRequest",
    "PredictResponse",
    "Problem",
    "ReadyResponse",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "ServerMetadataResponse",
    "datatype_of",
    "datatype_of_values",
]

# Arrow type name -> OIP datatype.
DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "halffloat": "FP16",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "category": "BYTES",
    "binary": "BYTES",
}
NUMERIC_DATATYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
    | {"FP16", "FP32", "FP64"}
)


def datatype_of(arrow_type: str) -> str:
    """The OIP datatype for a signature column's Arrow type (timestamps travel as ISO 8601
    strings, so BYTES)."""
    if arrow_type.startswith("timestamp") or arrow_type.startswith("date"):
        return "BYTES"
    return DATATYPES.get(arrow_type, "BYTES")


def datatype_of_values(values: list[Any]) -> str:
    """The OIP datatype of plain Python values (predictions)."""
    kinds = {type(v) for v in values}
    if not kinds:
        return "FP64"
    if kinds <= {bool}:
        return "BOOL"
    if kinds <= {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


# ---- health and metadata --------------------------------------------------------------------
class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(default_factory=list)


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[MetadataTensor] = Field(default_factory=list)
    outputs: list[MetadataTensor] = Field(default_factory=list)
    parameters: dict[str, Any] | None = None


# ---- inference ---------------------------------------------------------------------------
class RequestInput(BaseModel):
    """One input tensor: a signature column (``shape`` ``[N]`` or ``[N, 1]``), or every
    column at once (``[N, columns]``, numeric models), or a tensor model's whole input."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


# ---- plain JSON ------------------------------------------------------------------------------
class PredictRequest(BaseModel):
    """Exactly one of ``records``, ``columns`` or ``instances``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"records": [{"tenure": 3, "plan": "pro"}, {"tenure": 40, "plan": "basic"}]},
                {"columns": {"tenure": [3, 40], "plan": ["pro", "basic"]}},
            ]
        },
    )

    records: list[dict[str, Any]] | None = Field(
        default=None, description="One object per row, with every signature input as a key."
    )
    columns: dict[str, list[Any]] | None = Field(
        default=None, description="One list per signature input, all the same length."
    )
    instances: list[Any] | None = Field(
        default=None,
        description="Rows of values in signature order, or a tensor model's input arrays.",
    )


class PredictResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    model_version: str
    request_id: str


# ---- errors ----------------------------------------------------------------------------------
class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``): every error response."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="A stable error code: invalid_input, not_found, ...")
    instance: str | None = Field(default=None, description="The request path.")
