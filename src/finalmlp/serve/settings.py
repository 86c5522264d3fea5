"""Settings of the HTTP scoring service, typed and validated once (the CLI builds them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServeSettings(BaseModel):
    """How the service validates, limits, batches and logs requests.

    Attributes:
        unknown_fields: a record field the model does not use is an error (``reject``, 422)
            or dropped (``ignore``).
        max_batch: most records in one request (more: 413).
        max_body_bytes: largest request body (more: 413), checked on Content-Length and on
            the bytes actually read.
        api_key: when set, scoring, feedback, the A/B report and admin endpoints need the
            header ``X-API-Key`` with this value (else 401).
        key_field: record field whose value (in the first record) is the sticky A/B key when a
            request gives no ``key``; None: such requests are assigned at random.
        ab_log: append-only JSONL log of impressions and feedback (replayed on start); None
            keeps them in memory only.
        micro_batch: score concurrent requests together (one model call per batch).
        micro_batch_wait_ms: how long an idle worker waits for more requests (0: none).
        micro_batch_max_rows: most rows scored in one model call.
        micro_batch_workers: model calls in flight per arm; requests are batched while all
            are busy (one per core for the model: the CLI runs torch with 1 thread per call).
        seed: seed of the random arm choice for requests without a key.
        reload_on_sighup: SIGHUP reloads every arm's bundle (the CLI sets it; needs the main
            thread's event loop).
        header_timeout_s: a client must send a request's headers within this many seconds
            (from its first byte, or from connecting), else 408 and the connection is closed.
        body_timeout_s: and the body within this many seconds after the headers.
        keep_alive_timeout_s: an idle connection between requests is closed after this long.
        max_connections: open connections plus requests in flight beyond which requests get
            503 (uvicorn's ``limit_concurrency``).

    The last four apply when the service runs under uvicorn (``finalmlp serve``,
    :func:`finalmlp.serve.server.serve_forever`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unknown_fields: Literal["reject", "ignore"] = "reject"
    max_batch: int = Field(1024, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    api_key: str | None = Field(None, min_length=1)
    key_field: str | None = None
    ab_log: Path | None = None
    micro_batch: bool = True
    micro_batch_wait_ms: float = Field(0.0, ge=0.0, le=100.0)
    micro_batch_max_rows: int = Field(1024, ge=1)
    micro_batch_workers: int = Field(2, ge=1)
    seed: int | None = None
    reload_on_sighup: bool = False
    header_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    body_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    keep_alive_timeout_s: int = Field(5, ge=1, le=3600)
    max_connections: int = Field(512, ge=1)

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, key: str | None) -> str | None:
        if key is not None and key != key.strip():
            raise ValueError(
                "the API key has leading or trailing white space, which HTTP strips from the "
                "X-API-Key header, so no request could ever match it; remove the spaces"
            )
        return key
