"""A development Home Assistant with the RKLLM integration on the emulator and a real small model.

    python scripts/dev_home.py [--config config] [--port 8123] run [--library LIB --model MODEL]
    python scripts/dev_home.py chat "turn on the kitchen light" [--config config]

``run`` writes a configuration (once), starts ``hass``, and on the first start onboards it
through Home Assistant's own API (a demo user), adds the RKLLM model entry through the config
flow, exposes the demo entities to Assist and makes the RKLLM agent the Assist pipeline's.
Without ``--library`` and ``--model`` it uses the emulator's real-model engine and SmolLM2
(installed by ``scripts/setup``). With ``--install-requirements`` the integration is copied,
not linked, and Home Assistant installs its requirement itself, as in a user's installation.
Running it again reuses the configuration. ``chat`` sends a message through an Assist
pipeline over the websocket API and prints the reply as it streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
CLIENT_ID = "http://127.0.0.1/"
DEMO_USER = {"name": "Demo", "username": "demo", "password": "rkllm-demo", "language": "en"}
TOKEN_FILE = ".rkllm-dev-token"
AGENT = "conversation.rkllm_conversation"
EXPOSED = ["light.kitchen_light", "light.living_room_light", "sensor.outside_temperature"]

CONFIGURATION = """\
homeassistant:
  name: RKLLM demo
  unit_system: metric
  time_zone: UTC
  country: GB
  latitude: 51.5
  longitude: -0.12
  elevation: 10
  media_dirs:
    local: {media}

http:
  server_host: 127.0.0.1
  server_port: {port}

frontend:
api:
config:
onboarding:
person:
conversation:
assist_pipeline:

logger:
  default: warning
  logs:
    custom_components.rkllm: debug

input_boolean:
  kitchen: {{name: Kitchen switch}}
  living_room: {{name: Living room switch}}

template:
  - light:
      - name: Kitchen light
        state: "{{{{ is_state('input_boolean.kitchen', 'on') }}}}"
        turn_on: {{action: input_boolean.turn_on, target: {{entity_id: input_boolean.kitchen}}}}
        turn_off: {{action: input_boolean.turn_off, target: {{entity_id: input_boolean.kitchen}}}}
      - name: Living room light
        state: "{{{{ is_state('input_boolean.living_room', 'on') }}}}"
        turn_on: {{action: input_boolean.turn_on, target: {{entity_id: input_boolean.living_room}}}}
        turn_off: {{action: input_boolean.turn_off, target: {{entity_id: input_boolean.living_room}}}}
    sensor:
      - name: Outside temperature
        state: "18"
        unit_of_measurement: "°C"
        device_class: temperature
"""


def write_config(config: Path, port: int, copy: bool) -> None:
    """Write the configuration and link (or copy) the integration, unless already there."""
    config.mkdir(parents=True, exist_ok=True)
    if not (config / "configuration.yaml").exists():
        (config / "media").mkdir(exist_ok=True)  # local media, for AI-task attachments
        (config / "configuration.yaml").write_text(
            CONFIGURATION.format(port=port, media=(config / "media").resolve())
        )
    integration = config / "custom_components" / "rkllm"
    if not integration.exists():
        integration.parent.mkdir(exist_ok=True)
        if copy:
            shutil.copytree(REPO / "custom_components" / "rkllm", integration)
        else:
            integration.symlink_to(REPO / "custom_components" / "rkllm")


async def wait_until_up(
    session: aiohttp.ClientSession, base: str, process: asyncio.subprocess.Process
) -> None:
    """Wait until Home Assistant answers HTTP (or fail if it exited)."""
    for _ in range(600):
        if process.returncode is not None:
            raise RuntimeError(f"hass exited with {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/api/onboarding") as response:
                if response.status < 500:
                    return
        await asyncio.sleep(0.5)
    raise RuntimeError("Home Assistant did not start within 5 minutes")


async def onboard(session: aiohttp.ClientSession, base: str) -> str:
    """Create the demo user and finish onboarding; return an access token."""
    async with session.post(
        f"{base}/api/onboarding/users", json={"client_id": CLIENT_ID, **DEMO_USER}
    ) as response:
        response.raise_for_status()
        code = (await response.json())["auth_code"]
    form = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID}
    async with session.post(f"{base}/auth/token", data=form) as response:
        response.raise_for_status()
        token: str = (await response.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for step, body in (
        ("core_config", {}),
        ("analytics", {}),
        ("integration", {"client_id": CLIENT_ID, "redirect_uri": f"{CLIENT_ID}?auth_callback=1"}),
    ):
        async with session.post(f"{base}/api/onboarding/{step}", json=body, headers=headers) as response:
            response.raise_for_status()
    return token


async def drop_failed_entries(session: aiohttp.ClientSession, base: str, token: str) -> None:
    """Remove the default entries onboarding adds whose packages this environment lacks."""
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{base}/api/config/config_entries/entry", headers=headers) as response:
        entries = await response.json()
    for entry in entries:
        if entry["domain"] != "rkllm" and entry["state"] in ("setup_error", "not_loaded", "setup_retry"):
            async with session.delete(
                f"{base}/api/config/config_entries/entry/{entry['entry_id']}", headers=headers
            ):
                pass


async def add_model(
    session: aiohttp.ClientSession, base: str, token: str, library: str, model: str, *, mode: str
) -> None:
    """Add the RKLLM entry through the config flow, as the UI does.

    The flow shows a progress step while the model loads, then moves on by itself; like the UI,
    this reads the flow's state (GET) until the progress is over, and never submits an empty form.
    """
    headers = {"Authorization": f"Bearer {token}"}
    flows = f"{base}/api/config/config_entries/flow"
    async with session.post(flows, json={"handler": "rkllm"}, headers=headers) as response:
        response.raise_for_status()
        flow = await response.json()
    # The first step asks where the model runs: in Home Assistant's own process, or a child's.
    where = {"next_step_id": mode}
    async with session.post(f"{flows}/{flow['flow_id']}", json=where, headers=headers) as response:
        flow = await response.json()
    # Then that it uses a model file on this machine (rather than downloading one).
    use_file = {"next_step_id": f"{mode}_file"}
    async with session.post(f"{flows}/{flow['flow_id']}", json=use_file, headers=headers) as response:
        flow = await response.json()
    data = {
        "library_path": library,
        "model_path": model,
        "max_context_len": 4096,
        "advanced": {"platform": "rk3588"},
    }
    async with session.post(f"{flows}/{flow['flow_id']}", json=data, headers=headers) as response:
        response.raise_for_status()
        result = await response.json()
    while result.get("type") in ("progress", "progress_done"):
        await asyncio.sleep(0.5)
        async with session.get(f"{flows}/{flow['flow_id']}", headers=headers) as response:
            if response.status == HTTPStatus.NOT_FOUND:  # the flow finished between two reads
                result = {"reason": "the flow ended without an entry"}
                break
            response.raise_for_status()
            result = await response.json()
    async with session.get(
        f"{base}/api/config/config_entries/entry?domain=rkllm", headers=headers
    ) as response:
        added = any(entry["state"] == "loaded" for entry in await response.json())
    if not added:
        errors = result.get("errors") or result.get("reason") or result
        detail = result.get("description_placeholders", {}).get("error", "")
        raise RuntimeError(f"adding the model failed: {errors} {detail}".strip())


class Websocket:
    """A minimal client of Home Assistant's websocket API."""

    def __init__(self, connection: aiohttp.ClientWebSocketResponse) -> None:
        self.connection = connection
        self.next_id = 1

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, base: str, token: str) -> Websocket:
        connection = await session.ws_connect(f"{base.replace('http', 'ws', 1)}/api/websocket")
        await connection.receive_json()  # auth_required
        await connection.send_json({"type": "auth", "access_token": token})
        if (await connection.receive_json())["type"] != "auth_ok":
            raise RuntimeError("websocket authentication failed")
        return cls(connection)

    async def send(self, message: dict[str, Any]) -> int:
        message_id = self.next_id
        self.next_id += 1
        await self.connection.send_json({"id": message_id, **message})
        return message_id

    async def call(self, message: dict[str, Any]) -> Any:
        message_id = await self.send(message)
        while True:
            reply = await self.connection.receive_json()
            if reply.get("id") == message_id and reply["type"] == "result":
                if not reply["success"]:
                    raise RuntimeError(f"{message['type']}: {reply['error']}")
                return reply["result"]


async def set_up_assist(ws: Websocket) -> str:
    """Expose the demo entities, point the preferred pipeline at RKLLM; return a long-lived token.

    Also keeps the HTTP settings of configuration.yaml (listening on 127.0.0.1 only), which
    Home Assistant otherwise asks the first visitor to confirm.
    """
    await ws.call({"type": "http/config/promote"})
    await ws.call(
        {"type": "homeassistant/expose_entity", "assistants": ["conversation"], "entity_ids": EXPOSED,
         "should_expose": True}
    )  # fmt: skip
    pipelines = await ws.call({"type": "assist_pipeline/pipeline/list"})
    preferred = next(p for p in pipelines["pipelines"] if p["id"] == pipelines["preferred_pipeline"])
    fields = {k: v for k, v in preferred.items() if k != "id"}
    fields.update(name="RKLLM", conversation_engine=AGENT, conversation_language="*")
    await ws.call({"type": "assist_pipeline/pipeline/update", "pipeline_id": preferred["id"], **fields})
    token: str = await ws.call(
        {"type": "auth/long_lived_access_token", "client_name": "rkllm-dev", "lifespan": 3650}
    )
    return token


async def provision(base: str, config: Path, library: str, model: str, mode: str) -> None:
    """Onboard, add the model and set up Assist, once."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/onboarding") as response:
            steps = await response.json() if response.status == 200 else []
        if all(step["done"] for step in steps):
            return
        token = await onboard(session, base)
        await add_model(session, base, token, library, model, mode=mode)
        await drop_failed_entries(session, base, token)
        ws = await Websocket.connect(session, base, token)
        long_lived = await set_up_assist(ws)
        await ws.connection.close()
    (config / TOKEN_FILE).write_text(long_lived)


def real_model() -> tuple[str, str]:
    """The emulator's llama.cpp engine (built on first use) and the SmolLM2 model."""
    from rkllm_runtime.emulator import build_cached  # noqa: PLC0415 - not in a user's installation
    from rkllm_runtime.emulator.real_model import MissingAssetError, smollm2_model  # noqa: PLC0415

    try:
        return str(build_cached("1.3", engine="llama")), str(smollm2_model())
    except MissingAssetError as err:
        raise SystemExit(f"dev_home: {err}") from None


async def run(
    config: Path, port: int, library: str, model: str, install_requirements: bool, *, mode: str
) -> int:
    """Start Home Assistant, provision it on first start, and wait for it to stop."""
    write_config(config, port, copy=install_requirements)
    base = f"http://127.0.0.1:{port}"
    pip = [] if install_requirements else ["--skip-pip"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "homeassistant", "--config", str(config), *pip
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, process.send_signal, sig)
    async with aiohttp.ClientSession() as session:
        await wait_until_up(session, base, process)
    await provision(base, config, library, model, mode)
    print(
        f"\nHome Assistant is ready at {base}\n"
        f"  login: {DEMO_USER['username']} / {DEMO_USER['password']}\n"
        f'  chat:  scripts/chat "turn on the kitchen light"\n',
        flush=True,
    )
    return await process.wait()


async def chat(config: Path, port: int, text: str) -> None:
    """Send one message through the Assist pipeline and print the reply as it streams."""
    token = (config / TOKEN_FILE).read_text().strip()
    async with aiohttp.ClientSession() as session:
        ws = await Websocket.connect(session, f"http://127.0.0.1:{port}", token)
        message_id = await ws.send(
            {
                "type": "assist_pipeline/run",
                "start_stage": "intent",
                "end_stage": "intent",
                "input": {"text": text},
            }
        )
        while True:
            message = await ws.connection.receive_json()
            if message.get("id") != message_id or message["type"] != "event":
                continue
            event = message["event"]
            if event["type"] == "intent-progress":
                print(event["data"].get("chat_log_delta", {}).get("content", ""), end="", flush=True)
            elif event["type"] == "error":
                raise SystemExit(f"\nerror: {event['data']['message']}")
            elif event["type"] == "run-end":
                print()
                return


def main() -> None:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RKLLM_DEV_PORT", "8123")))
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--library", help="librkllmrt.so (default: the real-model emulator)")
    run_parser.add_argument("--model", help="model file (default: SmolLM2-135M-Instruct)")
    run_parser.add_argument(
        "--install-requirements",
        action="store_true",
        help="copy the integration and let Home Assistant install its requirement, as for a user",
    )
    run_parser.add_argument(
        "--mode",
        choices=["in_process", "child"],
        default="in_process",
        help="run the model in Home Assistant's process or in a separate one (first start only)",
    )
    chat_parser = commands.add_parser("chat")
    chat_parser.add_argument("text")
    args = parser.parse_args()
    if args.command == "run":
        if (args.library is None) != (args.model is None):
            parser.error("give both --library and --model, or neither")
        library, model = (args.library, args.model) if args.library else real_model()
        raise SystemExit(
            asyncio.run(
                run(args.config, args.port, library, model, args.install_requirements, mode=args.mode)
            )
        )
    asyncio.run(chat(args.config, args.port, args.text))


if __name__ == "__main__":
    main()
