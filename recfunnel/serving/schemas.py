"""Request and response bodies of the service, with their limits.

The limits that depend on the settings (largest ``k``, list lengths) are part of
the models, so the OpenAPI schema states them and an input beyond them is a 422
with a message before any handler runs. :func:`build_schemas` makes the models of
one app; every model forbids unknown fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

#: ids are 1..256 printable characters (no control characters)
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
MAX_ID_LENGTH = 256

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: names of context values and item attributes (dict keys: JSON Schema has no pattern for keys
#: in what pydantic emits, so only the length is constrained)
Key = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00]*$")]
Tag = Annotated[str, StringConstraints(max_length=64, pattern=r"^[^\x00|]*$")]


def _integral(value: Any) -> Any:
    """JSON Schema counts 85.0 as an integer: accept it as 85 (anything else is checked strictly)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: an integer (an integral float such as 5.0 too; never a string or a boolean)
Integer = Annotated[int, BeforeValidator(_integral)]
#: unix seconds up to the year 5138, or null (the validator sits outside the union so that the
#: schema keeps the bounds as minimum/maximum)
OptionalTimestamp = Annotated[Annotated[int, Ge(0), Le(100_000_000_000)] | None, BeforeValidator(_integral)]
Number = Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15)]
ContextValue = bool | Number | ShortText
AttributeValue = bool | Number | ShortText | Annotated[list[Tag], Field(max_length=32)]

#: item columns the service fills itself
RESERVED_ITEM_COLUMNS = ("item_id", "publish_time")


class Strict(BaseModel):
    """Responses: no field beyond the declared ones."""

    model_config = ConfigDict(extra="forbid")


class Request(BaseModel):
    """Requests: unknown fields and type coercion (``"5"`` for 5, 0 for false) are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


# ------------------------------------------------------------------ responses
class ErrorResponse(Strict):
    detail: str = Field(description="what was wrong, in one line")
    errors: list[dict[str, Any]] | None = Field(None, description="field errors of a 422")


class RecommendedItem(Strict):
    item_id: str
    rank: int
    score: float | None = Field(description="the final stage's score (None if not finite)")
    channels: dict[str, float | None] = Field(
        description="the retrieval channels that found the item and their scores "
                    "('fallback': filled from popular items)")


class TraceCandidate(Strict):
    item_id: str
    score: float | None


class StageTraceOut(Strict):
    stage: str = Field(description="retrieval:<channel>, retrieval:fallback (only when the fallback failed "
                       "and the static list replaced it), retrieval (the merge), rank or rerank")
    status: str = Field(description="ok, timeout, error, busy (hung calls still running) or skipped (no budget left)")
    latency_ms: float
    n_in: int
    n_out: int
    error: str | None = None
    candidates: list[TraceCandidate] = Field(description="the stage's output, best first (truncated)")


class RecommendResponse(Strict):
    user_id: str
    k: int
    model_version: str
    model_id: str
    degraded: bool = Field(description="a channel or stage was dropped, or the fallback filled the list")
    degraded_reasons: list[str]
    fallback_items: int
    latency_ms: float
    items: list[RecommendedItem]
    trace: list[StageTraceOut] | None = None


class EventsResponse(Strict):
    received: int
    stored: int = Field(description="events stored now (durable before this answer)")
    duplicates: int = Field(description="events whose event_id was stored before (stored once)")
    new: list[bool] = Field(description="per event, in order: stored now (true) or a duplicate (false)")


class ItemsResponse(Strict):
    received: int
    published: int


class HealthResponse(Strict):
    status: str


class ReadyResponse(Strict):
    ready: bool
    model_version: str | None = None
    model_id: str | None = None
    detail: str | None = None


class ModelsResponse(Strict):
    current: dict[str, Any] | None
    previous: dict[str, Any] | None
    versions: list[dict[str, Any]]
    history: list[dict[str, Any]]


class ModelActionResponse(Strict):
    action: str
    version: str
    model_id: str
    previous: str | None
    load_seconds: float


# ------------------------------------------------------------------- requests
class EventIn(Request):
    event_id: EventId = Field(description="chosen by the sender; a resent event_id is stored once")
    user_id: Id
    item_id: Id
    type: EventType = Field(description="impression, click, like, purchase, cart, fav, play, ...")
    timestamp: OptionalTimestamp = Field(None, description="unix seconds; default: when received")
    value: Number = 1.0


#: a version name or path: no control characters, no backslash
RefText = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f\\]+$")]


class LoadVersion(Request):
    version: RefText = Field(description="a model directory's name inside the models root")


class LoadPath(Request):
    path: RefText = Field(description="a model directory's path inside the models root "
                                      "(relative to it, or absolute inside it)")


#: the body of ``POST /admin/models/load``: ``{"version": ...}`` or ``{"path": ...}``
LoadModelRequest = LoadVersion | LoadPath


@dataclass(frozen=True)
class Schemas:
    """The request models of one app (their limits come from its settings)."""

    RecommendRequest: type[BaseModel]
    EventsRequest: type[BaseModel]
    ItemIn: type[BaseModel]
    ItemsRequest: type[BaseModel]


def build_schemas(*, max_k: int, max_exclude: int, max_events: int, max_items: int) -> Schemas:
    """Request models with these limits."""

    class RecommendRequest(Request):
        user_id: Id = Field(description="external user id; an unknown user gets the cold-start answer")
        k: Integer = Field(10, ge=1, le=max_k, description="number of items")
        context: dict[Key, ContextValue] = Field(
            default_factory=dict, max_length=32,
            description="request context (device, city, ...), given to the stages as arrays")
        exclude: list[Id] = Field(default_factory=list, max_length=max_exclude,
                                  description="item ids never to return (besides what the user has seen)")
        debug: bool = Field(False, description="add the trace of every stage")

    class EventsRequest(Request):
        events: list[EventIn] = Field(min_length=1, max_length=max_events)

    class ItemIn(Request):
        item_id: Id
        publish_time: OptionalTimestamp = Field(None, description="unix seconds; default: when received")
        attributes: dict[Key, AttributeValue] = Field(
            default_factory=dict, max_length=32,
            description="side information (category, author, tags, numbers): the item table's columns",
            json_schema_extra={"propertyNames": {"minLength": 1, "maxLength": 64,
                                                 "not": {"enum": list(RESERVED_ITEM_COLUMNS)}}})

        @model_validator(mode="after")
        def _no_reserved(self) -> ItemIn:
            clash = sorted(set(self.attributes) & set(RESERVED_ITEM_COLUMNS))
            if clash:
                raise ValueError(f"attributes may not be named {clash}")
            return self

    class ItemsRequest(Request):
        items: list[ItemIn] = Field(min_length=1, max_length=max_items,
                                    description="an item_id given twice: the last one counts")

    return Schemas(RecommendRequest, EventsRequest, ItemIn, ItemsRequest)
