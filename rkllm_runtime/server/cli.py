"""``rkllm-server``: the command line, and the process's life from start to SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from rkllm_runtime.chat import KVMode
from rkllm_runtime.models import detect_board

from .announce import Announcer, service_info
from .app import OneLineForBadHttp, create_app
from .child import READY_LINE
from .config import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_CONTEXT,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MAX_WAITING,
    DEFAULT_PORT,
    ServerConfig,
    is_loopback,
    package_version,
)
from .connections import GuardedSite
from .exchange import SERVER
from .pull import catalog_command, pull_command
from .registry import ModelRegistry

_LOGGER = logging.getLogger("rkllm_runtime.server")

# From SIGTERM to the engines closed; the web server then gets at most 1 s: out within 5 s.
STOP_WITHIN_S = 3.0


def _mask(text: str) -> int:
    """A CPU mask, in decimal or 0x hex."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU mask such as 0xF0") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rkllm-server",
        description="Serve RKLLM models on the Rockchip NPU over the Ollama and OpenAI APIs.",
    )
    parser.add_argument("--library", type=Path, required=True, help="path of librkllmrt.so")
    parser.add_argument(
        "--model", action="append", default=[], metavar="NAME=PATH", help="a model to serve (repeatable)"
    )
    parser.add_argument(
        "--models-dir", type=Path,
        help="serve this folder's .rkllm files, loaded on first use; /api/pull downloads into it",
    )  # fmt: skip
    parser.add_argument(
        "--max-loaded", type=int, help="most models loaded at once (default: as memory allows)"
    )
    parser.add_argument(
        "--keep-alive", type=float, default=-1, metavar="SECONDS",
        help="how long an idle model stays loaded unless a request says (default: -1, for ever)",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"(default: {DEFAULT_PORT}; 0: any)")
    parser.add_argument("--api-key-file", type=Path, help="file holding the API key clients must send")
    parser.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM), with --tls-key")
    parser.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument(
        "--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
        help=f"open connections at most, idle ones shed first (default: {DEFAULT_MAX_CONNECTIONS}, "
        "lowered to fit the descriptor limit)",
    )  # fmt: skip
    parser.add_argument(
        "--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S, metavar="SECONDS",
        help="time to send a request's head; also how long an idle connection stays open "
        f"(default: {DEFAULT_HEADER_TIMEOUT_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, metavar="SECONDS",
        help=f"time to send a request's body (default: {DEFAULT_BODY_TIMEOUT_S:g})",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="most tokens per reply")
    parser.add_argument(
        "--max-waiting", type=int, default=DEFAULT_MAX_WAITING, help="queued requests per model"
    )
    parser.add_argument("--context-length", type=int, default=DEFAULT_CONTEXT)
    parser.add_argument(
        "--kv-strategy", choices=[mode.value for mode in KVMode], default=KVMode.CONSERVATIVE.value,
        help="conservative (default): keep_history=0, history re-sent; reuse: keep_history=1",
    )  # fmt: skip
    parser.add_argument("--prompt-cache-dir", type=Path, help="keep system prompts' KV here across restarts")
    parser.add_argument(
        "--zeroconf", choices=("auto", "on", "off"), default="auto",
        help="announce _rkllm._tcp (auto: when not bound to loopback)",
    )  # fmt: skip
    parser.add_argument("--release", help="runtime release, for a library that does not embed one")
    parser.add_argument(
        "--n-keep", type=int, help="tokens kept when the context is full (default: the runtime's)"
    )
    parser.add_argument(
        "--enabled-cpus-mask", type=_mask, metavar="MASK",
        help="CPU cores the runtime may use, e.g. 0xF0: an RK3588's big cores (default: the runtime's)",
    )  # fmt: skip
    parser.add_argument("--embed-flash", action="store_true", help="keep the embedding table in flash")
    parser.add_argument(
        "--base-domain-id", type=int, default=0, help="NPU memory domain of the first model (default: 0)"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServerConfig:
    """The configuration, or exit with a message saying what is wrong."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.model and args.models_dir is None:
        parser.error("give --model NAME=PATH, or --models-dir")
    if args.max_loaded is not None and args.max_loaded < 1:
        parser.error("--max-loaded is too small")
    models: dict[str, Path] = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--model {item!r}: expected NAME=PATH")
        if not Path(path).is_file():
            parser.error(f"--model {name}: no file at {path}")
        models[name] = Path(path)
    api_key = os.environ.get("RKLLM_SERVER_API_KEY") or None
    if args.api_key_file is not None:
        try:
            api_key = args.api_key_file.read_text().strip() or None
        except OSError as err:
            parser.error(f"--api-key-file: {err}")
    if not is_loopback(args.host) and not api_key:
        parser.error(
            f"binding to {args.host} makes the models reachable from the network: "
            "set an API key (--api-key-file, or RKLLM_SERVER_API_KEY)"
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    numbers = ("max_request_bytes", "max_connections", "header_timeout", "body_timeout")
    for name in (*numbers, "max_tokens", "max_waiting", "context_length", "base_domain_id"):
        if getattr(args, name) < (0 if name in ("max_waiting", "base_domain_id") else 1):
            parser.error(f"--{name.replace('_', '-')} is too small")
    return ServerConfig(
        library=args.library,
        models=models,
        host=args.host,
        port=args.port,
        api_key=api_key,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_request_bytes=args.max_request_bytes,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_tokens=args.max_tokens,
        max_waiting=args.max_waiting,
        context_length=args.context_length,
        kv_mode=KVMode(args.kv_strategy),
        prompt_cache_dir=args.prompt_cache_dir,
        zeroconf=args.zeroconf == "on" or (args.zeroconf == "auto" and not is_loopback(args.host)),
        release=args.release,
        n_keep=args.n_keep,
        enabled_cpus_mask=args.enabled_cpus_mask,
        embed_flash=args.embed_flash,
        base_domain_id=args.base_domain_id,
        models_dir=args.models_dir,
        max_loaded=args.max_loaded,
        keep_alive=None if args.keep_alive < 0 else args.keep_alive,
        chip=detect_board().chip,
        check_dir=_check_dir(args.models_dir, args.prompt_cache_dir),
    )


def _check_dir(models_dir: Path | None, prompt_cache_dir: Path | None) -> Path | None:
    """Where the verdicts of model checks are kept: beside the models, or the prompt caches."""
    if models_dir is not None:
        return models_dir / ".checked"
    return prompt_cache_dir / "checked" if prompt_cache_dir is not None else None


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop within 5 s whatever the runtime is doing."""
    registry = ModelRegistry(config)
    app = create_app(config, registry)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=1.0,
        # Also the time a new connection has to send its first request head.
        keepalive_timeout=config.header_timeout_s,
        lingering_time=1.0,  # an unread body (refused request) is drained this long at most
    )
    await runner.setup()
    guard = app[SERVER].connections
    site = GuardedSite(runner, config.host, config.port, guard, _ssl_context(config))
    await site.start()
    scheme = "https" if config.tls_cert else "http"
    for host, port in (address[:2] for address in runner.addresses):
        print(f"rkllm-server listening on {scheme}://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    announcer = None
    if config.zeroconf:
        port = runner.addresses[0][1]
        announcer = Announcer(service_info(config, package_version(), port), config.host)
        await announcer.start()
    loading = asyncio.create_task(registry.load())
    loading.add_done_callback(lambda _: print(READY_LINE, flush=True))
    await stop.wait()
    deadline = time.monotonic() + STOP_WITHIN_S
    _LOGGER.info("Stopping: aborting runs, keeping prompt caches")
    if announcer is not None:
        await announcer.stop()
    clean = loading.done()
    if clean:
        try:
            await asyncio.wait_for(registry.close(), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            _LOGGER.warning("A run did not stop in time (the runtime cannot abort a prefill); exiting anyway")
            clean = False
    if not clean:
        # A runtime thread is still inside the library (a prefill or a load): nothing may wait for
        # it, not even the interpreter's exit. Prompt-cache files are only renamed into place
        # after a finished run, so the ones on disk stay whole.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: ``rkllm-server [options]``, ``… pull NAME [FILE]`` or ``… catalog``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pull"]:
        sys.exit(pull_command(argv[1:]))
    if argv[:1] == ["catalog"]:
        sys.exit(catalog_command(argv[1:]))
    config = parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("RKLLM_SERVER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.server").addFilter(OneLineForBadHttp())
    asyncio.run(serve(config))
