"""The HTTP scoring service: FastAPI over one or more bundles (A/B arms).

::

    POST /v1/predict        {"records": [{field: value}], "key": "user-7"}  -> predictions, arm
                            (a run of several tasks: one {task: probability} per record)
    POST /v1/feedback       {"request_id": ..., "outcomes": [0, 1, ...]}    -> recorded
                            (several tasks: one {task: 0/1/null} per record)
    GET  /v1/ab             per-arm impressions, clicks, CTR, calibration, AUC, z-test
    GET  /v1/model          per arm: version, schema fields, calibration, metrics
    POST /v1/admin/reload   load every arm's bundle again and swap (SIGHUP does the same)
    GET  /healthz, /metrics (Prometheus)

Each arm scores through its own bundle's calibration (calibration.json), when it has one.

Client mistakes always get a 4xx with ``{"detail": {"message": ...}}`` (and ``record``/
``field`` for a record that cannot be scored); request data is never used as a path. Bodies are
read, checked and parsed by :mod:`finalmlp.serve.bodies`; each request is validated before it
joins a micro-batch, and no score that is NaN or infinite is ever answered (a 422 instead).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from finalmlp.errors import ConfigError, DataError, FinalMLPError
from finalmlp.serve.ab import ABLog, UnknownRequestError, choose_arm
from finalmlp.serve.arms import ArmBundle, load_arms
from finalmlp.serve.bodies import (
    FeedbackRequest,
    FeedbackResponse,
    PredictRequest,
    PredictResponse,
    error,
    parse_bounded,
    read_body,
    require_json,
)
from finalmlp.serve.metrics import MetricsMiddleware, ServiceMetrics
from finalmlp.serve.microbatch import MicroBatcher
from finalmlp.serve.scorer import Prepared, RecordError, Scorer, clip_text
from finalmlp.serve.settings import ServeSettings

logger = logging.getLogger(__name__)
PREPARE_INLINE_ROWS = 64  # requests up to this many records are validated on the event loop


# ----------------------------------------------------------------------------- service
class Service:
    """What the endpoints share: the arms (swapped whole on reload), log, batcher, metrics."""

    def __init__(self, arms: list[ArmBundle], settings: ServeSettings) -> None:
        if not arms:
            raise ConfigError("the service needs at least one arm")
        for bundle in arms:
            if bundle.scorer.unknown_fields != settings.unknown_fields:
                raise ConfigError(
                    f"arm {bundle.name!r} was loaded with unknown_fields="
                    f"{bundle.scorer.unknown_fields!r} but the settings say "
                    f"{settings.unknown_fields!r}; load with load_arms(arms, "
                    "settings.unknown_fields)"
                )
        self.arms = arms
        self.settings = settings
        self.ab_log = ABLog(settings.ab_log)
        self.metrics = ServiceMetrics()
        self.metrics.set_models(arms)
        self.batcher = MicroBatcher(
            settings.micro_batch_max_rows,
            settings.micro_batch_wait_ms / 1000.0,
            settings.micro_batch_workers,
            on_batch=self.metrics.observe_batch,
        )
        self.rng = random.Random(settings.seed)
        self.reload_lock = asyncio.Lock()

    def choose(self, arms: list[ArmBundle], payload: PredictRequest) -> ArmBundle:
        if len(arms) == 1:
            return arms[0]
        key = _sticky_key(payload, self.settings.key_field)
        chosen = choose_arm([a.arm for a in arms], key, self.rng)
        return next(a for a in arms if a.arm is chosen)

    async def score(self, bundle: ArmBundle, records: list[Any]) -> np.ndarray:
        """Probabilities (N, T): validated here (RecordError), then scored (micro-batched),
        then checked to be finite (RecordError naming the field)."""
        scorer = bundle.scorer
        if len(records) <= PREPARE_INLINE_ROWS:  # microseconds: no thread hop
            prepared = scorer.prepare(records)
        else:
            prepared = await anyio.to_thread.run_sync(scorer.prepare, records)
        scores = await self._score_prepared(scorer, prepared)
        scorer.check_finite(prepared, scores)
        return scores

    async def _score_prepared(self, scorer: Scorer, prepared: Prepared) -> np.ndarray:
        if self.settings.micro_batch:
            return await self.batcher.score(scorer, prepared)
        return await anyio.to_thread.run_sync(scorer.score_prepared, prepared)

    async def reload(self) -> list[dict[str, Any]]:
        """Load every arm's bundle again, then swap them in at once; in-flight requests end on
        the models they started with."""
        async with self.reload_lock:
            old = self.arms
            try:
                new = await anyio.to_thread.run_sync(
                    load_arms, [a.arm for a in old], self.settings.unknown_fields
                )
            except Exception as exc:  # every failure counts, and is a reason, never a 500
                self.metrics.reloads.labels("failed").inc()
                if isinstance(exc, FinalMLPError):
                    raise
                raise DataError(f"{type(exc).__name__}: {clip_text(str(exc), 300)}") from exc
            self.arms = new
            self.metrics.set_models(new)
            self.metrics.reloads.labels("ok").inc()
        return [
            {
                "arm": n.name,
                "model_version": n.version,
                "previous_version": o.version,
                "changed": n.content_sha256 != o.content_sha256,
            }
            for n, o in zip(new, old, strict=True)
        ]


def _sticky_key(payload: PredictRequest, key_field: str | None) -> str | None:
    if payload.key is not None:
        return str(payload.key)
    first = payload.records[0]
    if key_field is not None and isinstance(first, dict):
        value = first.get(key_field)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    return None


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_api_key(request: Request, service: ServiceDep) -> None:
    expected = service.settings.api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise error(401, "missing or wrong API key: send it in the X-API-Key header")


# ----------------------------------------------------------------------------- routes
router = APIRouter()
Protected = [Depends(require_api_key)]
ProtectedPost = [Depends(require_api_key), Depends(require_json)]


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    dependencies=ProtectedPost,
)
async def predict(request: Request, service: ServiceDep) -> PredictResponse:
    """Probabilities for raw records, in order, from the arm this request goes to: one number
    per record for a one-task run, one ``{task: probability}`` per record for several tasks."""
    settings = service.settings
    body = await read_body(request, settings.max_body_bytes)
    payload = await parse_bounded(PredictRequest, body, "records", settings.max_batch)
    if len(payload.records) > settings.max_batch:
        raise error(
            413,
            f"{len(payload.records):,} records is over the limit of {settings.max_batch:,} "
            "per request; split the request",
        )
    bundle = service.choose(service.arms, payload)
    try:
        scores = await service.score(bundle, payload.records)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise error(422, f"a record could not be scored: {clip_text(str(exc), 300)}") from None
    tasks = bundle.scorer.tasks
    rows = scores.tolist()
    request_id = uuid.uuid4().hex
    logged = [row[0] for row in rows] if len(tasks) == 1 else rows
    log_tasks = None if len(tasks) == 1 else tasks
    if service.ab_log.persistent:  # fsync: off the event loop
        await anyio.to_thread.run_sync(
            service.ab_log.log_impressions, request_id, bundle.name, logged, log_tasks
        )
    else:
        service.ab_log.log_impressions(request_id, bundle.name, logged, log_tasks)
    service.metrics.observe_predict(bundle.name, len(rows))
    if len(tasks) == 1:
        return PredictResponse(
            predictions=logged, arm=bundle.name, request_id=request_id, model_version=bundle.version
        )
    return PredictResponse(
        predictions=[dict(zip(tasks, row, strict=True)) for row in rows],
        tasks=tasks,
        arm=bundle.name,
        request_id=request_id,
        model_version=bundle.version,
    )


@router.post("/v1/feedback", response_model=FeedbackResponse, dependencies=ProtectedPost)
async def feedback(request: Request, service: ServiceDep) -> FeedbackResponse:
    """Record the outcomes (1 click, 0 no click) of a scored request, one per record; for a run
    of several tasks one ``{task: 0, 1 or null}`` per record (null or absent: not observed)."""
    settings = service.settings
    body = await read_body(request, settings.max_body_bytes)
    payload = await parse_bounded(FeedbackRequest, body, "outcomes", settings.max_batch)
    arm = await anyio.to_thread.run_sync(
        service.ab_log.log_feedback, payload.request_id, payload.outcomes
    )
    service.metrics.observe_feedback(arm, payload.outcomes)
    return FeedbackResponse(request_id=payload.request_id, arm=arm, recorded=len(payload.outcomes))


@router.get("/v1/ab", dependencies=Protected)
async def ab_report(service: ServiceDep) -> dict[str, Any]:
    """Per arm: requests, impressions, feedback, clicks, CTR, mean predicted CTR, AUC, and a
    two-proportion z-test of each arm's CTR against the first arm's (per task under ``tasks``
    for a run of several tasks)."""
    arms = service.arms
    tasks = {a.name: a.scorer.tasks for a in arms if len(a.scorer.tasks) > 1}
    return service.ab_log.report([a.name for a in arms], tasks)


@router.post("/v1/admin/reload", dependencies=ProtectedPost)
async def admin_reload(request: Request, service: ServiceDep) -> dict[str, Any]:
    """Load every arm's bundle again from its directory and swap the models atomically."""
    await read_body(request, service.settings.max_body_bytes)  # unused, but checked as all are
    try:
        return {"arms": await service.reload()}
    except FinalMLPError as exc:
        raise error(409, f"reload failed, still serving the previous models: {exc}") from None


@router.get("/v1/model")
async def model_info(service: ServiceDep) -> dict[str, Any]:
    """Per arm: version (content hash), model, weight, input fields and training metrics."""
    return {
        "arms": [_describe(a) for a in service.arms],
        "unknown_fields": service.settings.unknown_fields,
        "max_batch": service.settings.max_batch,
    }


def _describe(bundle: ArmBundle) -> dict[str, Any]:
    run = bundle.scorer.run
    return {
        "arm": bundle.name,
        "weight": bundle.arm.weight,
        "model_version": bundle.version,
        "content_sha256": bundle.content_sha256,
        "model": run.config.model.name,
        "tasks": run.tasks,
        "calibration": run.calibration.method if run.calibration is not None else None,
        "rowwise_encoding": bundle.rowwise,
        "fields": [
            {"name": f.name, "kind": f.kind, "required": f.required} for f in bundle.scorer.fields
        ],
        "metrics": run.metrics,
    }


@router.get("/healthz")
async def healthz(service: ServiceDep) -> dict[str, Any]:
    return {"status": "ok", "arms": {a.name: a.version for a in service.arms}}


@router.get("/metrics")
async def metrics(service: ServiceDep) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ----------------------------------------------------------------------------- app
def create_app(arms: list[ArmBundle], settings: ServeSettings) -> FastAPI:
    """The scoring service over loaded arms (see :func:`load_arms`).

    Example:
        >>> arms = load_arms([Arm("default", Path("runs/frappe"))])
        >>> app = create_app(arms, ServeSettings(max_batch=256))
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    service = Service(arms, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: set[asyncio.Task[Any]] = set()
        if settings.reload_on_sighup:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(
                signal.SIGHUP, lambda: tasks.add(loop.create_task(_reload_logged(service)))
            )
        yield
        service.ab_log.close()

    app = FastAPI(title="finalmlp scoring", lifespan=lifespan)
    app.state.service = service
    app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    app.add_exception_handler(RecordError, _record_error)
    app.add_exception_handler(FinalMLPError, _user_error)
    return app


async def _reload_logged(service: Service) -> None:
    """SIGHUP: reload, and say in one log line what happened (a failure names its reason)."""
    try:
        for arm in await service.reload():
            logger.warning("reloaded arm %s: %s", arm["arm"], arm["model_version"])
    except Exception as exc:  # a signal handler's task: nobody else would see it
        logger.error("reload on SIGHUP failed, still serving the previous models: %s", exc)


async def _record_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RecordError)
    detail = {"record": exc.index, "field": exc.field, "message": str(exc)}
    return JSONResponse({"detail": detail}, status_code=422)


async def _user_error(request: Request, exc: Exception) -> JSONResponse:
    status = 404 if isinstance(exc, UnknownRequestError) else 422
    return JSONResponse({"detail": {"message": str(exc)}}, status_code=status)
