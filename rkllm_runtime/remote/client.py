"""A model on an rkllm-server, a :class:`~rkllm_runtime.chat.contract.ModelEngine` as the local one is.

Speaks the server's own API (``POST /rkllm/chat``, ``GET /rkllm/status``), so events, tool
calls, the final :class:`~rkllm_runtime.chat.ChatResult`, the counters and each error's kind
arrive as the server's engine produced them. Needs the ``server`` extra (aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp

from rkllm_runtime.chat import (
    ChatEvent,
    ChatRequest,
    ChatStream,
    EngineState,
    EngineStatus,
    Finished,
    Observed,
    WarmOutcome,
)
from rkllm_runtime.chat.checks import check_texts
from rkllm_runtime.chat.evaluate import EvaluationRequest, EvaluationResult
from rkllm_runtime.errors import (
    AuthenticationError,
    BusyError,
    ClosedError,
    ErrorKind,
    RKLLMError,
    RunError,
    ServerStoppedError,
    ServerUnavailableError,
    UnknownModelError,
    error_kind,
)
from rkllm_runtime.remote.silence import silence_bound_s
from rkllm_runtime.remote.wire import (
    error_from_dict,
    event_from_dict,
    request_to_dict,
    status_from_dict,
    status_to_dict,
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
AWAY_STATUS_TIMEOUT_S = 2.0
"""A server marked away is asked this briefly: one that is back answers its status at once."""

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
    headers = auth_headers(api_key)
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


class RemoteEngine(Observed):
    """One model of an rkllm-server; ``url`` and ``api_key`` may change (a restarted server).

    :attr:`available` is what is known of the server, from status reads (whoever makes them)
    and from requests: marking it away ends the requests under way with
    :class:`ServerUnavailableError`, as does an answer silent for :attr:`longest_silence_s`.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, model: str, api_key: str | None) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.available = False
        self.served = EngineStatus(model_file=model)
        """The model's status in the server's last ``/rkllm/status``."""
        self.npu = NPUReading()
        self._session = session
        self._departures = 0
        """Times the server was marked away; a request under way ends when this changes."""
        self._waits: set[asyncio.Timeout] = set()
        """What the requests under way are waiting for (a response, the next bytes)."""

    @property
    def status(self) -> EngineStatus:
        """The model's status on the server, with this side's state and counters."""
        return replace(self.served, state=self.state, stats=self.stats)

    @property
    def longest_silence_s(self) -> float:
        """How long an answer may go without a byte: the longest prefill of the model's context."""
        served = self.served
        return silence_bound_s(served.model_bytes, served.params.max_context_len)

    async def read_npu(self) -> NPUReading:
        """The server's NPU, as of its last status."""
        return self.npu

    def diagnostics(self) -> dict[str, Any]:
        """The model's status on the server, without what it last said."""
        status = {key: value for key, value in status_to_dict(self.served).items() if key != "last"}
        return {"server": {"model": self.model, "available": self.available, "status": status}}

    def set_available(self, available: bool) -> None:
        """Record whether the server answers (listeners hear of a change); away ends the requests."""
        if available != self.available:
            self.available = available
            if not available:
                self._departures += 1
                for wait in self._waits:
                    if not wait.expired():
                        wait.reschedule(asyncio.get_running_loop().time())
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
                timeout=aiohttp.ClientTimeout(
                    total=STATUS_TIMEOUT_S if self.available else AWAY_STATUS_TIMEOUT_S
                ),
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
        self.served = status_from_dict(status)
        self.npu = NPUReading(**body.get("npu") or {})
        self.stats = self.served.stats
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
        departures = self._departures
        self._set_state(EngineState.PREFILLING)
        finished = False
        try:
            # The response starts after the request's wait in the server's queue and its
            # prefill: no bound but the server's presence.
            async with self._while_present(departures, None):
                response = await self._session.post(
                    f"{self.url}/rkllm/chat",
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                )
            async with response:
                if response.status != 200:
                    raise await _error(response)
                async for data in self._records(response, departures):
                    if "error" in data:
                        raise error_from(int(data["error"].get("status", 500)), data["error"])
                    event = event_from_dict(data)
                    if self.state is EngineState.PREFILLING:
                        self._set_state(EngineState.GENERATING)
                    if isinstance(event, Finished):
                        finished = True
                        self.stats.count(event.result)  # as the server's engine does (the status confirms)
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
        # The answer comes once the prompt is prefilled: no longer than the longest prefill.
        answer = await self._post("warm", body, "warming", self.longest_silence_s)
        try:
            outcome = WarmOutcome(answer["outcome"])
        except (ValueError, KeyError, TypeError) as err:
            raise RunError(f"the server sent something unreadable: {err!r}") from err
        await self._refresh_quietly()  # the KV cache's new size
        return outcome

    async def evaluate(self, request: EvaluationRequest) -> EvaluationResult:
        """Have the server's engine answer questions about a state with probabilities."""
        if self.closed:
            raise ClosedError("the model was unloaded")
        if not self.available:
            await self.refresh()
        body = {"model": self.model, "request": request.as_dict()}
        # Queued behind the server's other requests: no bound but the server's presence.
        answer = await self._post("evaluate", body, "evaluating", None)
        try:
            result = EvaluationResult.from_dict(answer["result"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise RunError(f"the server sent something unreadable: {err!r}") from err
        await self._refresh_quietly()
        return result

    async def _post(self, action: str, body: dict[str, Any], doing: str, silence_s: float | None) -> Any:
        """POST ``/rkllm/<action>`` and return its JSON answer; an error answer raises the engine's error."""
        try:
            async with (
                self._while_present(self._departures, silence_s),
                self._session.post(
                    f"{self.url}/rkllm/{action}",
                    json=body,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                ) as response,
            ):
                if response.status != 200:
                    raise await _error(response)
                return await response.json()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ServerUnavailableError(
                f"lost {self.url} while {doing}: {err or type(err).__name__}"
            ) from err
        except ValueError as err:
            raise RunError(f"the server sent something unreadable: {err!r}") from err

    @contextlib.asynccontextmanager
    async def _while_present(self, departures: int, silence_s: float | None) -> AsyncIterator[None]:
        """Wait for the server, unless it is marked away (since ``departures``) or silent ``silence_s``."""
        if self._departures != departures:
            raise ServerUnavailableError(f"{self.url} went away while answering")
        try:
            async with asyncio.timeout(silence_s) as wait:
                self._waits.add(wait)
                try:
                    yield
                finally:
                    self._waits.discard(wait)
        except TimeoutError as err:
            if not wait.expired():
                raise
            if self._departures != departures:
                raise ServerUnavailableError(f"{self.url} went away while answering") from err
            raise ServerUnavailableError(
                f"{self.url} said nothing for {silence_s:.0f} s, longer than the longest prefill"
            ) from err

    async def _records(
        self, response: aiohttp.ClientResponse, departures: int
    ) -> AsyncGenerator[dict[str, Any]]:
        """The NDJSON records of a response, however long each line is."""
        silence_s = self.longest_silence_s
        pending = b""
        while True:
            async with self._while_present(departures, silence_s):
                chunk = await response.content.readany()
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
        if pending.strip():
            yield json.loads(pending)

    async def _refresh_quietly(self) -> None:
        """Take the server's counters after a request (the local ones stay if it cannot tell)."""
        with contextlib.suppress(RKLLMError):
            await self.refresh()

    async def aclose(self) -> None:
        """Stop using the server (the session is the caller's)."""
        self._set_state(EngineState.CLOSED)
