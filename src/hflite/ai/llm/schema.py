"""What each LLM role must answer: pydantic models whose JSON schemas are sent to the backend (for
constrained decoding where it can) and which validate every reply."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

__all__ = ["Advice", "Explanation", "NewsSummary", "ReplyError", "json_schema", "parse_reply"]

Short = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
_STRICT = ConfigDict(extra="forbid", frozen=True)


def _informative(items: list[str]) -> list[str]:
    """Reasons and risks must say something: a bare stance or action word is refused; a repeated
    item is dropped (small models repeat themselves)."""
    seen: set[str] = set()
    out = []
    for text in items:
        key = " ".join(text.lower().split()).strip(".!")
        if key in _BARE:
            raise ValueError(f"{text!r} says nothing: give the fact behind it")
        if key not in seen:
            seen.add(key)
            out.append(text)
    return out


_BARE = {
    "bullish",
    "bearish",
    "neutral",
    "buy",
    "sell",
    "hold",
    "approve",
    "scale",
    "veto",
    "risk",
    "none",
    "n/a",
}


class Explanation(BaseModel):
    """Role ``explain``: the decision in plain language."""

    model_config = _STRICT
    stance: Literal["bullish", "bearish", "neutral"]
    confidence: float = Field(ge=0.0, le=1.0)
    reasons: list[Short] = Field(min_length=1, max_length=3)
    risks: list[Short] = Field(max_length=3)

    _check = field_validator("reasons", "risks")(_informative)


class Advice(BaseModel):
    """Role ``advise``: a portfolio manager's second look at an entry risk already approved. It can
    keep it, shrink it (``scale`` below 1) or veto it; it can never make it bigger."""

    model_config = _STRICT
    action: Literal["approve", "scale", "veto"]
    scale: float = Field(ge=0.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)
    reasons: list[Short] = Field(min_length=1, max_length=3)
    risks: list[Short] = Field(max_length=3)

    _check = field_validator("reasons", "risks")(_informative)


class NewsSummary(BaseModel):
    """Role ``summarise``: one ticker's headlines of one day as a sentiment score with reasons."""

    model_config = _STRICT
    score: float = Field(ge=-1.0, le=1.0, description="-1 very negative .. +1 very positive")
    confidence: float = Field(ge=0.0, le=1.0)
    reasons: list[Short] = Field(min_length=1, max_length=3)

    _check = field_validator("reasons")(_informative)


class ReplyError(ValueError):
    """A reply that is not JSON or does not match the role's schema (the message says where)."""


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, inlined and without titles (what grammar builders handle best); a
    fresh copy each call (built once per model: pydantic takes ~2 ms to generate it)."""
    return json.loads(_schema_text(model))


@functools.cache
def _schema_text(model: type[BaseModel]) -> str:
    return json.dumps(_strip(model.model_json_schema()))


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("title", "description")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def parse_reply(model: type[BaseModel], text: str) -> BaseModel:
    """Validate a reply. Tolerates a fenced code block around the JSON (```json ... ```), nothing else."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ReplyError(f"not JSON ({exc.msg} at char {exc.pos}): {text[:120]!r}") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()[:4])
        raise ReplyError(f"does not match the {model.__name__} schema: {where}") from None
