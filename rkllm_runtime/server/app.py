"""The web application: routes, the API key, JSON errors, health and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from rkllm_runtime.remote.wire import status_to_dict
from rkllm_runtime.system import npu_load_percent, npu_temperature_celsius

from . import model_api, native_api, ollama_api, openai_api
from .config import ServerConfig
from .connections import ConnectionGuard, connection_cap
from .errors import ApiError
from .exchange import ARRIVED, MODEL, SERVER, Server, dumps, error_body
from .metrics import CONTENT_TYPE, ServerMetrics, render
from .registry import ModelRegistry, ModelState

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/", "/health"})


class OneLineForBadHttp(logging.Filter):
    """aiohttp's log of a request it could not parse: no traceback, and shown only when debugging.

    The access log already has its line (``"UNKNOWN / HTTP/1.0" 400``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "Malformed HTTP request from %s (answered 400): %s"
            record.args = (peer, " ".join(error.message.split()))
            record.exc_info = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("aiohttp.server").isEnabledFor(logging.DEBUG)
        return True


def _is_openai(request: web.Request) -> bool:
    return request.path.startswith("/v1/")


def _error(err: ApiError, request: web.Request) -> web.Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
    if err.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return web.Response(
        body=dumps(error_body(err, _is_openai(request))),
        status=err.status,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON in the API's shape, with its status; responses counted by status."""
    server = request.app[SERVER]
    request[ARRIVED] = time.monotonic()
    server.connections.started(request)
    try:
        if (request.content_length or 0) > server.config.max_request_bytes:
            raise web.HTTPRequestEntityTooLarge(server.config.max_request_bytes, request.content_length or 0)
        response = await handler(request)
    except ApiError as err:
        response = _error(err, request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        message = "the request is too large" if err.status == 413 else err.reason
        response = _error(ApiError(err.status, message), request)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        _LOGGER.exception("Error answering %s %s", request.method, request.path)
        response = _error(ApiError(500, "internal server error"), request)
    finally:
        server.connections.finished(request)
    model = request.get(MODEL)
    if model is not None and model in server.registry.models:
        api = "openai" if _is_openai(request) else "ollama"
        server.metrics.responses[(model, api, response.status)] += 1
    return response


@web.middleware
async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Authorization: Bearer <key>`` on every path but the health probe."""
    key = request.app[SERVER].config.api_key
    if key and request.path not in OPEN_PATHS:
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        # Header bytes that are not UTF-8 arrive as surrogates: they never match, they never fail.
        sent = token.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, key.encode()):
            raise ApiError(401, "a valid API key is required (Authorization: Bearer <key>)")
        request.app[SERVER].connections.authenticated(request)
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 when every loaded model is ready, 503 otherwise (no details without a key)."""
    states = {model.state for model in request.app[SERVER].registry.models.values()} - {ModelState.UNLOADED}
    if states <= {ModelState.READY}:
        return web.json_response({"status": "ok"})
    status = "loading" if ModelState.LOADING in states else "unavailable"
    return web.json_response({"status": status}, status=503)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text."""
    server = request.app[SERVER]
    text = await asyncio.get_running_loop().run_in_executor(
        None, render, server.registry, server.metrics, server.connections
    )
    return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})


async def status(request: web.Request) -> web.Response:
    """GET /rkllm/status: each model's engine state and counters, and the NPU's (for a remote engine)."""
    models = {}
    for model in request.app[SERVER].registry.models.values():
        entry: dict[str, object] = {"state": model.state, "error": model.error}
        if model.engine is not None:
            entry |= status_to_dict(replace(model.engine.status, model_bytes=model.size))
        models[model.name] = entry
    npu = await asyncio.get_running_loop().run_in_executor(None, _npu)
    return web.json_response({"models": models, "npu": npu})


async def no_embeddings(request: web.Request) -> web.Response:
    """Ollama's POST /api/embed and /api/embeddings, OpenAI's /v1/embeddings: 501, said in words."""
    raise ApiError(
        501, f"{request.path} is not implemented: this server generates text, it makes no embeddings"
    )


def _npu() -> dict[str, float | None]:
    return {"load": npu_load_percent(), "temperature": npu_temperature_celsius()}


def create_app(config: ServerConfig, registry: ModelRegistry) -> web.Application:
    """The application for these models."""
    app = web.Application(middlewares=[errors, api_key], client_max_size=config.max_request_bytes)
    guard = ConnectionGuard(connection_cap(config.max_connections))
    app[SERVER] = Server(config, registry, ServerMetrics(), time.time(), guard)
    app.add_routes([*ollama_api.routes(), *openai_api.routes(), *native_api.routes(), *model_api.routes()])
    app.add_routes(
        [web.get("/health", health), web.get("/metrics", metrics), web.get("/rkllm/status", status)]
    )
    app.add_routes(
        [web.post(path, no_embeddings) for path in ("/api/embed", "/api/embeddings", "/v1/embeddings")]
    )
    return app
