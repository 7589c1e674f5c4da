"""What the server is told on its command line."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rkllm_runtime.chat import MAX_WAITING, KVMode

DEFAULT_PORT = 8080
DEFAULT_MAX_REQUEST_BYTES = 4 * 2**20
DEFAULT_MAX_TOKENS = 2048
DEFAULT_MAX_WAITING = MAX_WAITING
DEFAULT_CONTEXT = 4096
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The server's settings."""

    library: Path
    """``librkllmrt.so``."""
    models: dict[str, Path]
    """Model name, as clients ask for it, to its ``.rkllm`` file."""
    encoders: dict[str, Path] = field(default_factory=dict)
    """Model name to its vision encoder (``.rknn``), for the models that read images."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    """Required as ``Authorization: Bearer <key>`` when set."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open connections at most (lowered to fit the descriptor limit); idle ones are shed first."""
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    """A connection that has not sent a whole request head within this time is closed."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """A request body that has not arrived within this time gets a 408."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    """Most tokens one reply may have; also the default."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Requests that may wait per model while one runs; more are refused (429)."""
    context_length: int = DEFAULT_CONTEXT
    kv_mode: KVMode = KVMode.CONSERVATIVE
    """The engines' KV-cache strategy."""
    prompt_cache_dir: Path | None = None
    """Where the system prompts' prompt-cache files persist (None: not kept)."""
    zeroconf: bool = False
    """Announce ``_rkllm._tcp`` on the network."""
    release: str | None = None
    """Runtime release, for libraries that do not embed one."""
    n_keep: int | None = None
    """Tokens kept when the context is full (None: the runtime's default)."""
    enabled_cpus_mask: int | None = None
    """CPU cores the runtime's threads may use (None: the runtime's default)."""
    embed_flash: bool = False
    """Keep the embedding table in flash instead of memory."""
    base_domain_id: int = 0
    """NPU memory domain of the first model; each further model takes the next one."""
    models_dir: Path | None = None
    """Where pulled models are kept; its ``*.rkllm`` files are served, loaded on first use."""
    max_loaded: int | None = None
    """Most models loaded at once (None: as many as the NPU's memory holds)."""
    keep_alive: float | None = None
    """Seconds an idle model stays loaded unless a request says otherwise (None: for ever)."""
    chip: str | None = None
    """The board's chip (``RK3588``...), against which model files are checked; None: not checked."""
    check_dir: Path | None = None
    """Where the verdicts of model checks are kept (None: each start checks again)."""
    allow_image_urls: bool = False
    """Fetch the remote ``image_url`` parts of OpenAI requests (refused otherwise: data URLs only)."""

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the server."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def package_version() -> str:
    """This package's version."""
    try:
        return version("rkllm-runtime")
    except PackageNotFoundError:
        return "0"
