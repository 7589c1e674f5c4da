"""Model management over Ollama's API: ``POST /api/pull`` and ``DELETE /api/delete``.

Pull streams NDJSON progress records as Ollama does. ``insecure`` has no effect: the hub is
reached as ``HF_ENDPOINT`` says.
"""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from rkllm_runtime.errors import InsufficientDiskError, ModelError, RKLLMError
from rkllm_runtime.models import Board, detect_board
from rkllm_runtime.models.download import DownloadedModel, Progress, download_with_encoder, forget

from .convert import flag
from .errors import ApiError, bad_request
from .exchange import SERVER, Server, dumps, error_body, read_json
from .pull import check_or_delete, describe, ranked, resolve

NDJSON = "application/x-ndjson"


def _name(body: dict[str, Any]) -> str:
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad_request('"model" is required')
    return name.strip()


def _api_error(err: ApiError | RKLLMError) -> ApiError:
    """507: no disk space; 422: the file cannot run here; 502: the hub failed."""
    if isinstance(err, ApiError):
        return err
    status = 507 if isinstance(err, InsufficientDiskError) else 422 if isinstance(err, ModelError) else 502
    return ApiError(status, str(err))


async def _fetch(server: Server, name: str, report: asyncio.Queue[dict[str, Any]]) -> None:
    """Download, check and serve the model ``name``; progress records go to ``report``."""
    config, registry = server.config, server.registry
    if config.models_dir is None:
        raise ApiError(400, "this server has no models folder: start it with --models-dir to pull models")
    board = Board(chip=config.chip)
    wanted = resolve(name, None, board, registry.runtime_release)
    repo, file = wanted.repo, wanted.file
    loop = asyncio.get_running_loop()
    cancel = threading.Event()
    pulling = file  # the file being fetched: the model's, then its encoder's

    def on_file(part: str) -> None:
        nonlocal pulling
        pulling = part

    def on_progress(progress: Progress) -> None:
        record = {
            "status": f"pulling {pulling}",
            "digest": f"hf.co/{repo}/{pulling}",
            "completed": progress.completed,
        }
        loop.call_soon_threadsafe(
            report.put_nowait, record | ({"total": progress.total} if progress.total else {})
        )

    await report.put({"status": "pulling manifest"})
    async with registry.pull_lock(file):
        download = partial(
            download_with_encoder,
            repo,
            file,
            wanted.encoder,
            config.models_dir,
            on_file=on_file,
            on_progress=on_progress,
            cancel=cancel,
            name=wanted.served,
        )
        try:
            model: DownloadedModel = await asyncio.shield(loop.run_in_executor(None, download))
        except asyncio.CancelledError:
            cancel.set()  # the transfer stops at its next block and leaves no file
            raise
        await report.put({"status": "verifying sha256 digest"})
        check = partial(check_or_delete, config.library, model, board=board, release=registry.runtime_release)
        await loop.run_in_executor(None, check)
        await report.put({"status": "writing manifest"})
        encoder = config.models_dir / model.encoder if model.encoder else None
        await registry.serve_download(wanted.served, model.path, f"hf.co/{repo}/{file}", encoder)
    await report.put({"status": "success"})


async def pull(request: web.Request) -> web.StreamResponse:
    """POST /api/pull: download a catalog model (Ollama name) or ``hf.co/OWNER/REPO/FILE``."""
    server, body = request.app[SERVER], await read_json(request)
    name = _name(body)
    flag(body.get("insecure"), "insecure")
    report: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(_fetch(server, name, report))
    if body.get("stream", True) is False:
        try:
            await task
        except RKLLMError as err:
            raise _api_error(err) from err
        finally:
            task.cancel()
        return web.json_response({"status": "success"})
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    try:
        first = await _next(report, task)
    except RKLLMError as err:
        raise _api_error(err) from err
    await response.prepare(request)
    try:
        record: dict[str, Any] | None = first
        while record is not None:
            await response.write(dumps(record) + b"\n")
            record = await _next(report, task)
    except (RKLLMError, ApiError) as err:
        await response.write(dumps(error_body(_api_error(err), openai=False)) + b"\n")
    finally:
        task.cancel()
    await response.write_eof()
    return response


async def _next(report: asyncio.Queue[dict[str, Any]], task: asyncio.Task[None]) -> dict[str, Any] | None:
    """The next progress record; None once the task is done and every record was read; its error."""
    if report.empty() and not task.done():
        getter = asyncio.ensure_future(report.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
    if not report.empty():
        return report.get_nowait()
    task.result()  # raises the task's error
    return None


async def delete(request: web.Request) -> web.Response:
    """DELETE /api/delete: unload a pulled model and delete its file."""
    server, body = request.app[SERVER], await read_json(request)
    model = server.registry.get(_name(body))
    await server.registry.delete(model)
    folder = server.config.models_dir
    if folder is not None:
        await asyncio.get_running_loop().run_in_executor(None, _remove, folder, model.path)
    return web.json_response({})


def _remove(folder: Path, path: Path) -> None:
    path.unlink(missing_ok=True)
    forget(folder, path.relative_to(folder).as_posix())


async def catalog(request: web.Request) -> web.Response:
    """GET /rkllm/catalog: the models to pull, what fits this board and runtime first, with the reasons."""
    server = request.app[SERVER]
    folder = server.config.models_dir
    board = await asyncio.get_running_loop().run_in_executor(None, detect_board, folder)
    release = server.registry.runtime_release
    choices = await asyncio.get_running_loop().run_in_executor(None, ranked, board, release, folder)
    return web.json_response(
        {"chip": board.chip, "runtime_release": release, "models": [describe(choice) for choice in choices]}
    )


def routes() -> list[web.RouteDef]:
    """The model-management routes."""
    return [
        web.post("/api/pull", pull),
        web.delete("/api/delete", delete),
        web.get("/rkllm/catalog", catalog),
    ]
