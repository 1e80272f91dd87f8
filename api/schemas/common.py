"""The base of every answer's model, and the shapes all resources share."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

# A metric's value as the wire contract carries it (protocol.messages.Value).
Value = bool | int | float | str
# Open by nature: what the reading, event or person's action that caused a change carried.
Detail = dict[str, Any]


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Names(Out):
    zh: str
    en: str


Item = TypeVar("Item")


class Page(Out, Generic[Item]):
    items: list[Item]
    total: int


class Ok(Out):
    ok: bool


class Nothing(Out):
    """``{}``: the request changed nothing (e.g. a plan already at that level from that
    source)."""


# --- health ----------------------------------------------------------------------------------
class Health(BaseModel):
    """Open: each part (broker, ingest, writer, alerts, ...) reports what its role runs."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
