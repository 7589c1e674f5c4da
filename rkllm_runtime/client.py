"""A model on an rkllm-server, a :class:`~rkllm_runtime.contract.ModelEngine` as the local one is.

Speaks the server's own API (``POST /rkllm/chat``, ``GET /rkllm/status``), so events, tool
calls, the final :class:`~rkllm_runtime.chat.ChatResult`, the counters and each error's kind
arrive as the server's engine produced them. Needs the ``server`` extra (aiohttp).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp

from rkllm_runtime.chat import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    ChatStream,
    EngineState,
    EngineStats,
    Finished,
    WarmOutcome,
)
from rkllm_runtime.chat.engine import check_texts
from rkllm_runtime.chat.wire import error_from_dict, event_from_dict, request_to_dict, stats_from_dict
from rkllm_runtime.contract import ErrorKind, error_kind
from rkllm_runtime.errors import (
    AuthenticationError,
    BusyError,
    ClosedError,
    RKLLMError,
    RunError,
    ServerStoppedError,
    ServerUnavailableError,
    UnknownModelError,
)
from rkllm_runtime.system import NPUReading

__all__ = [
    "AuthenticationError",
    "RemoteEngine",
    "ServerStoppedError",
    "ServerUnavailableError",
    "UnknownModelError",
    "auth_headers",
    "server_models",
]

CONNECT_TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 10.0
CONVERSATION_HEADER = "X-RKLLM-Conversation"
"""Names the conversation, so a load balancer keeps its turns on one board (deploy/haproxy)."""


def error_for(status: int, message: str) -> RKLLMError:
    """The error a response status stands for (a response without an error kind)."""
    if status == 401:
        return AuthenticationError(message)
    if status == 404:
        return UnknownModelError(message)
    if status == 429:
        return BusyError(message)
    if status in (502, 503, 504):
        return ServerUnavailableError(message)
    return RunError(message)


def error_from(status: int, error: object) -> RKLLMError:
    """The error an error body stands for: by its kind when it has one, else by its status."""
    if isinstance(error, dict):
        return error_from_dict(error) or error_for(status, str(error.get("message")))
    return error_for(status, str(error))


async def _error(response: aiohttp.ClientResponse) -> RKLLMError:
    try:
        body = await response.json(content_type=None)
        return error_from(response.status, body["error"])
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return error_for(response.status, f"HTTP {response.status} {response.reason}")


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The header carrying the API key, as rkllm-server expects it."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def server_models(session: aiohttp.ClientSession, url: str, api_key: str | None) -> list[str]:
    """The models an rkllm-server serves (its Ollama ``/api/tags``).

    Raises :class:`AuthenticationError` or :class:`ServerUnavailableError`.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with session.get(
            f"{url.rstrip('/')}/api/tags",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S),
        ) as response:
            if response.status != 200:
                raise await _error(response)
            body = await response.json()
        return [str(model["name"]) for model in body["models"]]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as err:
        raise ServerUnavailableError(f"{url} is not an rkllm-server that can be reached: {err!r}") from err


class RemoteEngine:
    """One model of an rkllm-server; ``url`` and ``api_key`` may change (a restarted server)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, model: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.stats = EngineStats()
        self.state = EngineState.READY
        self.available = False
        self.status: dict[str, Any] = {}
        """The model's entry in the server's last ``/rkllm/status``."""
        self.npu = NPUReading()
        self._session = session
        self._listeners: list[Callable[[], None]] = []

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self.state is EngineState.CLOSED

    @property
    def waiting(self) -> int:
        """Requests the server has queued behind the running one."""
        return int(self.status.get("waiting", 0))

    @property
    def model_file(self) -> str:
        """The model's file name on the server."""
        return str(self.status.get("model_file", self.model))

    @property
    def release(self) -> str:
        """The server's runtime release."""
        return str(self.status.get("runtime_release", "unknown"))

    async def read_npu(self) -> NPUReading:
        """The server's NPU, as of its last status."""
        return self.npu

    def diagnostics(self) -> dict[str, Any]:
        """The model's status on the server, without what it last said."""
        status = {key: value for key, value in self.status.items() if key != "last"}
        return {"server": {"model": self.model, "available": self.available, "status": status}}

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` whenever state, availability or stats change; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _set_state(self, state: EngineState) -> None:
        if not self.closed:
            self.state = state
            self._changed()

    def set_available(self, available: bool) -> None:
        """Record whether the server answers (listeners hear of a change)."""
        if available != self.available:
            self.available = available
            self._changed()

    def connect_to(self, url: str, api_key: str | None) -> None:
        """Talk to the server at a new address or with a new key."""
        self.url, self.api_key = url.rstrip("/"), api_key

    def _headers(self) -> dict[str, str]:
        return auth_headers(self.api_key)

    async def refresh(self) -> None:
        """Read the server's status of the model: availability, counters, last result, NPU.

        Raises :class:`ServerUnavailableError`, :class:`AuthenticationError` or
        :class:`UnknownModelError`; a model the server failed to load is unavailable.
        """
        try:
            async with self._session.get(
                f"{self.url}/rkllm/status",
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S),
            ) as response:
                if response.status != 200:
                    raise await _error(response)
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise ServerUnavailableError(
                f"{self.url} cannot be reached: {err or type(err).__name__}"
            ) from err
        models = body.get("models", {})
        if self.model not in models:
            raise UnknownModelError(f"{self.url} does not serve {self.model!r}; it has: {', '.join(models)}")
        status = models[self.model]
        if status.get("state") != "ready":
            raise ServerUnavailableError(
                f"model {self.model!r} is {status.get('state')}: {status.get('error')}"
            )
        self.status = status
        self.npu = NPUReading(**body.get("npu") or {})
        self.stats = stats_from_dict(status)
        self.set_available(True)
        self._changed()

    def chat(self, request: ChatRequest) -> ChatStream:
        """Answer a request on the server; iterate the stream for its events, :class:`Finished` last."""
        return ChatStream(self._chat(request))

    async def _chat(self, request: ChatRequest) -> AsyncGenerator[ChatEvent]:
        if self.closed:
            raise ClosedError("the model was unloaded")
        check_texts(request)  # as the engine would, and JSON could not carry them either
        if not self.available:
            await self.refresh()  # marked away: ask now whether it is back
        body = {"model": self.model, "request": request_to_dict(request)}
        headers = self._headers()
        if request.conversation_id:
            headers[CONVERSATION_HEADER] = request.conversation_id
        self._set_state(EngineState.PREFILLING)
        finished = False
        try:
            async with self._session.post(
                f"{self.url}/rkllm/chat",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            ) as response:
                if response.status != 200:
                    raise await _error(response)
                async for data in _records(response):
                    if "error" in data:
                        raise error_from(int(data["error"].get("status", 500)), data["error"])
                    event = event_from_dict(data)
                    if self.state is EngineState.PREFILLING:
                        self._set_state(EngineState.GENERATING)
                    if isinstance(event, Finished):
                        finished = True
                        self._record(event.result)
                    yield event
        except (aiohttp.ClientError, TimeoutError) as err:
            self.set_available(False)
            raise ServerUnavailableError(
                f"lost {self.url} while answering: {err or type(err).__name__}"
            ) from err
        except (AuthenticationError, ServerUnavailableError):
            self.set_available(False)  # whoever watches the server re-reads it (and asks for a new key)
            raise
        except ValueError as err:  # not JSON, or not an event
            raise RunError(f"the server sent something unreadable: {err}") from err
        except RunError as err:
            if error_kind(err) is ErrorKind.RUN:  # the model's fault, as the server's engine records it
                self.stats.last_error = str(err)
            await self._refresh_quietly()
            raise
        finally:
            self._set_state(EngineState.READY)
        if not finished:
            self.set_available(False)
            raise ServerUnavailableError(f"{self.url} ended the answer early")
        await self._refresh_quietly()

    async def warm(self, request: ChatRequest) -> WarmOutcome:
        """Have the server warm its KV cache with the request's system prompt and tools, loading the model."""
        if self.closed:
            raise ClosedError("the model was unloaded")
        check_texts(request)
        if not self.available:
            await self.refresh()
        body = {"model": self.model, "request": request_to_dict(request)}
        try:
            async with self._session.post(
                f"{self.url}/rkllm/warm",
                json=body,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            ) as response:
                if response.status != 200:
                    raise await _error(response)
                outcome = WarmOutcome((await response.json())["outcome"])
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ServerUnavailableError(
                f"lost {self.url} while warming: {err or type(err).__name__}"
            ) from err
        except (ValueError, KeyError, TypeError) as err:
            raise RunError(f"the server sent something unreadable: {err!r}") from err
        await self._refresh_quietly()  # the KV cache's new size
        return outcome

    async def _refresh_quietly(self) -> None:
        """Take the server's counters after a request (the local ones stay if it cannot tell)."""
        with contextlib.suppress(RKLLMError):
            await self.refresh()

    def _record(self, result: ChatResult) -> None:
        """Count a finished request as the server's engine does (the next status read confirms)."""
        self.stats.requests += 1
        if result.cache_hit:
            self.stats.cache_hits += 1
        else:
            self.stats.cache_misses += 1
        self.stats.kv_tokens = result.kv_tokens
        self.stats.last = result
        self.stats.last_error = None

    async def aclose(self) -> None:
        """Stop using the server (the session is the caller's)."""
        self._set_state(EngineState.CLOSED)


async def _records(response: aiohttp.ClientResponse) -> AsyncGenerator[dict[str, Any]]:
    """The NDJSON records of a response, however long each line is."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)
