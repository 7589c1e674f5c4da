"""Keeping a remote engine usable: a server watched and reconnected, a child process restarted."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import CALLBACK_TYPE, Event, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_call_later

from rkllm_runtime import RKLLMError
from rkllm_runtime.remote.client import AuthenticationError, RemoteEngine
from rkllm_runtime.server.child import ServerProcess

from .const import (
    CHILD_START_TIMEOUT_S,
    CRASH_WINDOW_S,
    CRASHES_FOR_ISSUE,
    DOMAIN,
    HEALTHY_AFTER_S,
    LOGGER,
    RECONNECT_S,
    RESTART_BACKOFF_S,
    STATUS_INTERVAL_S,
)
from .issues import RUNTIME_CRASHING, async_create_entry_issue, async_delete_entry_issue


def backoff(attempt: int, pauses: tuple[float, ...]) -> float:
    """Seconds before retry ``attempt`` (0-based): its pause, or the last one."""
    return pauses[min(attempt, len(pauses) - 1)]


class ServerWatch:
    """Reads the server's status now and then: unavailable when it goes, back when it returns.

    What it finds is the engine's :attr:`~RemoteEngine.available`, which requests read and set
    too: a server found away ends the requests under way, a request that lost the server has
    it read again at once. A refused key starts the reauthentication flow.
    """

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry, engine: RemoteEngine) -> None:
        self._hass = hass
        self._entry = entry
        self._engine = engine
        self._lost = asyncio.Event()

    @callback
    def async_start(self) -> None:
        """Watch until the entry unloads."""
        self._entry.async_on_unload(self._engine.add_listener(self._on_change))
        self._entry.async_create_background_task(self._hass, self._watch(), f"{DOMAIN} server watch")

    @callback
    def _on_change(self) -> None:
        if not self._engine.available:
            self._lost.set()  # lost mid-answer: start reconnecting now

    async def _watch(self) -> None:
        failures = 0
        while True:
            interval = STATUS_INTERVAL_S if self._engine.available else backoff(failures, RECONNECT_S)
            try:
                async with asyncio.timeout(interval):
                    await self._lost.wait()
            except TimeoutError:
                pass
            self._lost.clear()
            was_available = self._engine.available
            try:
                await self._engine.refresh()
            except AuthenticationError as err:
                LOGGER.warning("%s refused the API key: %s", self._engine.url, err)
                self._engine.set_available(False)
                self._entry.async_start_reauth(self._hass)
                return
            except RKLLMError as err:
                if was_available or failures == 0:
                    LOGGER.warning("%s is unavailable, reconnecting: %s", self._engine.url, err)
                self._engine.set_available(False)
                failures += 1
            else:
                if failures:
                    LOGGER.info("%s is back", self._engine.url)
                failures = 0


class ChildSupervisor:
    """Runs the entry's rkllm-server child: started with it, restarted after a crash, stopped with it."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry,
        engine: RemoteEngine,
        process: ServerProcess,
    ) -> None:
        self._hass = hass
        self._entry = entry
        self.engine = engine
        self.process = process
        self.crashes: deque[float] = deque()
        self._stopping = False
        self._cancel_all_clear: CALLBACK_TYPE | None = None

    async def async_start(self) -> None:
        """Start the child and connect the engine; raises :class:`RKLLMError`."""
        await self._start_process()
        await self.engine.refresh()
        self._healthy()

    @callback
    def _healthy(self) -> None:
        """The child answers: once it has run a while without crashing, the crash repair goes."""
        self._stop_all_clear()
        self._cancel_all_clear = async_call_later(self._hass, HEALTHY_AFTER_S, self._all_clear)

    @callback
    def _all_clear(self, _now: object) -> None:
        self._cancel_all_clear = None
        async_delete_entry_issue(self._hass, self._entry, RUNTIME_CRASHING)

    @callback
    def _stop_all_clear(self) -> None:
        if self._cancel_all_clear is not None:
            self._cancel_all_clear()
            self._cancel_all_clear = None

    async def _start_process(self) -> None:
        await self.process.start(CHILD_START_TIMEOUT_S)
        LOGGER.debug("rkllm-server child %s is listening on %s", self.process.pid, self.process.url)
        self.engine.connect_to(self.process.url, self.process.api_key)

    @callback
    def async_watch(self) -> None:
        """Restart the child whenever it dies; stop it when the entry unloads or Home Assistant stops."""
        self._entry.async_on_unload(self.async_stop)
        self._entry.async_on_unload(
            self._hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, self._async_stop_with_home_assistant)
        )
        self._entry.async_create_background_task(self._hass, self._watch(), f"{DOMAIN} child watch")

    async def _async_stop_with_home_assistant(self, _: Event) -> None:
        await self.async_stop()

    async def _watch(self) -> None:
        while True:
            status = await self.process.wait()
            if self._stopping:
                return
            self._stop_all_clear()
            self.engine.set_available(False)
            LOGGER.error(
                "The model's process exited with status %s; restarting it. Its last lines:\n%s",
                status,
                self.process.last_log(),
            )
            self._count_crash()
            await self._restart()

    def _count_crash(self) -> None:
        now = time.monotonic()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - CRASH_WINDOW_S:
            self.crashes.popleft()
        if len(self.crashes) >= CRASHES_FOR_ISSUE:
            async_create_entry_issue(
                self._hass,
                self._entry,
                RUNTIME_CRASHING,
                severity=ir.IssueSeverity.ERROR,
                translation_key=RUNTIME_CRASHING,
                translation_placeholders={
                    "title": self._entry.title,
                    "count": str(len(self.crashes)),
                    "minutes": str(int(CRASH_WINDOW_S // 60)),
                    "log": self.process.last_log() or "-",
                },
            )

    async def _restart(self) -> None:
        """Start again, with a growing pause while starting fails."""
        for attempt in itertools.count():
            await asyncio.sleep(backoff(attempt, RESTART_BACKOFF_S))
            try:
                await self._start_process()
                await self.engine.refresh()
            except RKLLMError as err:
                if attempt == 0:
                    LOGGER.warning("The model's process did not come back yet: %s", err)
                await self.process.stop()
                continue
            LOGGER.info("The model's process is back (pid %s)", self.process.pid)
            self._healthy()
            return

    async def async_stop(self) -> None:
        """Stop the child (killed if it does not exit in time)."""
        self._stopping = True
        self._stop_all_clear()
        await self.process.stop()
