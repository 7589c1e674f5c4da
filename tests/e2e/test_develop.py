"""scripts/develop's instance answers over HTTP with the real model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.e2e.conftest import DevHome

AGENT = "conversation.rkllm_conversation"


def entry_id(dev_home: DevHome) -> str:
    """The model entry of the development instance."""
    (entry,) = [
        e for e in dev_home.request("GET", "/api/config/config_entries/entry") if e["domain"] == "rkllm"
    ]
    return str(entry["entry_id"])


def last_request(dev_home: DevHome) -> Any:
    """The engine's figures of the last request, from the entry's diagnostics.

    (The token sensors are disabled by default.)
    """
    diagnostics = dev_home.request("GET", f"/api/diagnostics/config_entry/{entry_id(dev_home)}")
    return diagnostics["data"]["engine"]["last_request"]


def test_conversation_over_http_is_answered_by_the_real_model(dev_home: DevHome) -> None:
    reply = dev_home.request(
        "POST", "/api/conversation/process", {"text": "Hello! Who are you?", "agent_id": AGENT}
    )
    assert reply["response"]["response_type"] == "action_done"
    speech = reply["response"]["speech"]["plain"]["speech"]
    assert len(speech.split()) >= 2  # a real, generated sentence
    states = {state["entity_id"]: state["state"] for state in dev_home.request("GET", "/api/states")}
    speed = next(value for key, value in states.items() if key.endswith("_generation_speed"))
    assert float(speed) > 0
    # The real Assist prompt with its tools, whatever an earlier request left in the KV cache.
    last = last_request(dev_home)
    assert last["prompt_tokens"] > 500
    assert last["prompt_tokens"] == last["cached_tokens"] + last["prefilled_tokens"]


async def leave_mid_answer(dev_home: DevHome, text: str) -> None:
    """Run Assist's pipeline over the websocket API and close it at the reply's first words (as a browser)."""
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{dev_home.base}/api/websocket") as ws:
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": dev_home.token})
        assert (await ws.receive_json())["type"] == "auth_ok"
        run = {"start_stage": "intent", "end_stage": "intent", "input": {"text": text}}
        await ws.send_json({"id": 1, "type": "assist_pipeline/run", **run})
        while True:
            event = (await ws.receive_json()).get("event") or {}
            if ((event.get("data") or {}).get("chat_log_delta") or {}).get("content"):
                return


def test_a_request_left_mid_answer_leaves_the_next_prompt_counted_whole(dev_home: DevHome) -> None:
    asyncio.run(leave_mid_answer(dev_home, "Hello! Who are you?"))
    dev_home.request("POST", "/api/conversation/process", {"text": "Hello! Who are you?", "agent_id": AGENT})
    last = last_request(dev_home)
    assert last["prompt_tokens"] > 500
    assert last["prefilled_tokens"] < 50  # the system prompt the left request read stayed in the KV cache
    assert last["cached_tokens"] == last["prompt_tokens"] - last["prefilled_tokens"]


def test_the_assist_prompt_stays_cached_between_requests(dev_home: DevHome) -> None:
    dev_home.request("POST", "/api/conversation/process", {"text": "Good morning", "agent_id": AGENT})
    assert last_request(dev_home)["prefilled_tokens"] < 50


def test_a_truncated_prompt_cache_file_does_not_take_home_assistant_down(dev_home: DevHome) -> None:
    """The llama.cpp engine aborted the process on a truncated file: it must never be handed one."""
    caches = sorted((dev_home.config / ".storage" / "rkllm" / "prompt_cache").glob("*.rkcache"))
    assert caches  # saved by the first request
    for path in caches:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    dev_home.request("POST", f"/api/config/config_entries/entry/{entry_id(dev_home)}/reload")
    reply = dev_home.request("POST", "/api/conversation/process", {"text": "Good evening", "agent_id": AGENT})
    assert reply["response"]["response_type"] == "action_done"
    assert not last_request(dev_home)["cache_hit"]  # the damaged file was not used, but rebuilt
    assert all(
        path.stat().st_size == json.loads(path.with_suffix(".json").read_text())["size"] for path in caches
    )
