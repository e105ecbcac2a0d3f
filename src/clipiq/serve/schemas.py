"""The JSON the service answers, as pydantic models, so ``/openapi.json`` documents every field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="stable snake_case code, e.g. upload_too_large, bad_image, queue_full")
    message: str = Field(description="what is wrong, naming the input")
    input: str | None = Field(None, description="the uploaded file's name the error is about, or null")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ScoreRow(BaseModel):
    """One uploaded file's result. Metrics with more outputs than ``score`` (clipiqa's attributes) add one
    number per output name (``GET /v1/config`` lists them as ``outputs``)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": {"type": "number"}})

    path: str = Field(description="the upload's file name")
    score: float | None = Field(None, description="the metric's score (rounded to 6 places); null on error")
    error: str = Field("", description="why this file was not scored; empty when scored")
    note: str = Field("", description="what decoding chose, e.g. the first frame of an animation; often empty")


class ScoreResponse(BaseModel):
    metric: str = Field(description="the metric's registered name")
    model: str = Field(description="the backbone or trained model that scored")
    results: list[ScoreRow] = Field(description="one row per uploaded file, in upload order")


class Region(BaseModel):
    label: int = Field(description="the region's index in the partition")
    score: float = Field(description="the region's quality in [0,1], higher is better")
    area: float = Field(description="fraction of the image's pixels")
    description: str = Field(description="one short sentence (empty without a describer)")
    dimensions: dict[str, str] = Field(description="colour, noise, artifacts, blur, overall -> level")


class ExplainResponse(BaseModel):
    path: str = Field(description="the upload's file name")
    metric: str = Field(description="the metric that gave score")
    score: float = Field(description="the global quality")
    attributes: dict[str, float] = Field(description="CLIP-IQA attributes in [0,1] (brightness, sharpness, ...)")
    regions: list[Region] = Field(description="the image's regions, worst first")
    heatmap_png: str = Field(description="base64 greyscale PNG of the quality heatmap: brighter is worse; same "
                                         "aspect as the image, longer side at most explain_max_side (512)")
    width: int = Field(description="the uploaded image's width in pixels")
    height: int = Field(description="the uploaded image's height in pixels")
    restorers: list[str] = Field(description="the restorers enabled on this service (for /v1/restore)")


class MetricInfo(BaseModel):
    name: str
    description: str
    lower_better: bool = Field(description="whether lower scores mean better quality")
    score_range: list[float] = Field(description="[low, high] of the scores")
    default_model: str | None
    needs_checkpoint: bool
    serving: bool = Field(description="whether this service scores with this metric")


class RestorerInfo(BaseModel):
    name: str
    description: str
    task: str
    scale: int = Field(description="output size / input size (default)")
    has_weights: bool
    enabled: bool = Field(description="whether /v1/restore runs it on this service")


class ConfigResponse(BaseModel):
    metric: str
    model: str
    outputs: list[str] = Field(description="the metric's output names: keys of each score row")
    restorers: list[str] = Field(description="enabled restorers")
    max_upload_bytes: int = Field(description="largest file accepted, in bytes")
    max_pixels: int = Field(description="largest image accepted, width x height")
    max_files: int = Field(description="most files in one /v1/score request")
    max_aspect: float = Field(description="most elongated image accepted (longer side / shorter side)")
    auth: bool = Field(description="whether /v1/* needs Authorization: Bearer <key>")


class StatusResponse(BaseModel):
    status: str = Field(description='"ok" (healthz, readyz when ready) or "loading" / "failed"')
    detail: str | None = None
