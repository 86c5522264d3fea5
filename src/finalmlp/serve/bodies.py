"""Request bodies of the scoring service: reading, checking and parsing them, bounded.

- Every POST must say ``Content-Type: application/json`` (else 415): form, multipart and
  ``text/plain`` bodies are what a web page can send to another origin without a CORS preflight,
  so refusing them keeps such pages from posting feedback or reloads. Compressed bodies
  (``Content-Encoding`` other than ``identity``, or gzip bytes) are refused with 415 too.
- A body is read up to ``max_body_bytes`` (413 past it).
- A body over :data:`SCAN_FROM_BYTES` is first scanned for the length of its top-level array
  (``records``, ``outcomes``), element by element, stopping at the limit: a body of millions of
  tiny records is refused (413) after parsing ``limit + 1`` of them, not all, and off the event
  loop. Smaller bodies parse in well under a millisecond and skip the scan.
- Error messages quote at most :data:`~finalmlp.serve.scorer.ECHO_CHARS` characters of any
  input (a field name, a key), with a length note.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from finalmlp.serve.scorer import clip_text

BodyT = TypeVar("BodyT", bound=BaseModel)
SCAN_FROM_BYTES = 64 * 1024  # bodies larger than this are scanned for their array length first
GZIP_MAGIC = b"\x1f\x8b"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def error(status: int, message: str, **extra: Any) -> HTTPException:
    """The service's error reply: ``{"detail": {"message": ..., **extra}}``."""
    return HTTPException(status, detail={"message": message, **extra})


# ----------------------------------------------------------------------------- models
Outcome = Annotated[int, Field(ge=0, le=1)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[Any] = Field(min_length=1, description="Raw feature values, one per row.")
    key: str | int | None = Field(None, description="Sticky A/B key, e.g. the user id.")


class PredictResponse(BaseModel):
    predictions: list[float] | list[dict[str, float]]
    tasks: list[str] | None = Field(None, description="Task names (a run of several tasks).")
    arm: str
    request_id: str
    model_version: str


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(max_length=64)
    outcomes: list[Outcome | dict[str, Outcome | None]] = Field(min_length=1)


class FeedbackResponse(BaseModel):
    request_id: str
    arm: str
    recorded: int


# ----------------------------------------------------------------------------- reading
async def require_json(request: Request) -> None:
    """415 for a POST whose body is not declared ``application/json``, or is compressed."""
    if request.method != "POST":
        return
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json":
        shown = clip_text(declared) if declared else "none"
        raise error(415, f"send the body as Content-Type: application/json (got {shown})")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise error(
            415,
            f"Content-Encoding {clip_text(encoding)!r} is not accepted; send the JSON body "
            "uncompressed",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or actually sent) and
    with 415 when it is gzip data."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise error(413, f"request body of {int(declared):,} bytes is over the {limit:,} limit")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise error(413, f"request body is over the {limit:,} byte limit")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody reads the answer
        raise error(400, "the client disconnected before sending the whole body") from None
    body = b"".join(chunks)
    if body.startswith(GZIP_MAGIC):
        raise error(415, "the body is gzip-compressed; send the JSON body uncompressed")
    return body


# ----------------------------------------------------------------------------- parsing
def parse_body(model: type[BodyT], body: bytes) -> BodyT:
    """Validate a JSON body; malformed JSON or a wrong shape is a 422 naming where."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = []
        for item in exc.errors(include_url=False, include_input=False)[:5]:
            where = ".".join(clip_text(str(p)) for p in item["loc"]) or "body"
            problems.append(f"{where}: {item['msg']}")
        raise error(422, "; ".join(problems)) from None


async def parse_bounded(model: type[BodyT], body: bytes, key: str, limit: int) -> BodyT:
    """:func:`parse_body`, with 413 when the top-level array ``key`` holds over ``limit``
    elements; a large body is scanned first, element by element, and parsed off the loop."""
    if len(body) <= SCAN_FROM_BYTES:
        return parse_body(model, body)
    return await anyio.to_thread.run_sync(_scan_then_parse, model, body, key, limit)


def _scan_then_parse(model: type[BodyT], body: bytes, key: str, limit: int) -> BodyT:
    if array_length_over(body, key, limit):
        raise error(413, f"{key}: more than {limit:,} per request is over the limit; split it")
    return parse_body(model, body)


def array_length_over(body: bytes, key: str, limit: int) -> bool:
    """Whether the JSON object in ``body`` has a member ``key`` that is an array of more than
    ``limit`` elements. Parses at most ``limit + 1`` elements of it; False for a body that is
    not such an object (the full parse then names what is wrong)."""
    try:
        text = body.decode("utf-8")
        pos = _skip(text, 0)
        if text[pos : pos + 1] != "{":
            return False
        pos = _skip(text, pos + 1)
        while text[pos : pos + 1] == '"':
            name, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos : pos + 1] != ":":
                return False
            pos = _skip(text, pos + 1)
            if name == key and text[pos : pos + 1] == "[":
                over, pos = _count_over(text, pos, limit)
                if over:
                    return True
            else:
                _, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos : pos + 1] != ",":
                return False
            pos = _skip(text, pos + 1)
    except (ValueError, RecursionError):  # incl. JSONDecodeError, UnicodeDecodeError
        return False
    return False


def _count_over(text: str, pos: int, limit: int) -> tuple[bool, int]:
    """At ``text[pos] == "["``: (more than ``limit`` elements, the position after the array)."""
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == "]":
        return False, pos + 1
    count = 0
    while True:
        _, pos = _DECODER.raw_decode(text, pos)
        count += 1
        if count > limit:
            return True, pos
        pos = _skip(text, pos)
        if text[pos : pos + 1] == "]":
            return False, pos + 1
        if text[pos : pos + 1] != ",":
            raise ValueError("not an array")
        pos = _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos
