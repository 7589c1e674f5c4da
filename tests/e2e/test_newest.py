"""The newest Home Assistant release, installed as a user installs it, in each mode the model runs in.

pytest-homeassistant-custom-component pins an older release (2026.10.4), so this test runs the
newest one as a process of its own: a fresh virtual environment with ``newest/requirements.txt``
(hash-pinned, bumped on purpose when a release appears), installed ``--offline`` from the uv
cache that ``scripts/setup`` filled; Home Assistant installs ``rkllm-runtime`` itself from the
wheel offered through ``UV_FIND_LINKS``, as HACS users get it. One Home Assistant start per mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pytest_socket

from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from rkllm_runtime.emulator.tokenizer_json import tokenizer_json
from tests.conftest import call
from tests.e2e.conftest import DevHome, running_dev_home, uv

REQUIREMENTS = Path(__file__).parent / "newest" / "requirements.txt"
AGENT = "conversation.rkllm_conversation"
REPLY = "Hello from the newest release."
TOO_LONG = "word " * 40_000  # 200,000 characters: more than a 4,096-token context can ever hold
WHERE = {"in_process": "in Home Assistant's process", "child": "in a separate process"}
RULES = [
    # Evaluations: the reply a rule scripts is what the model's logits favour.
    Rule(match="Is the kitchen light on?", tools=False, reply="yes"),
    Rule(match="Which room is lit?", tools=False, reply="B"),
    Rule(match="How bright is it?", tools=False, reply="2"),
    Rule(role="user", match="kitchen light on", tools=True, reply=call("HassTurnOn", name="Kitchen light")),
    Rule(role="tool", match="success", reply="The kitchen light is on."),
    # Matched against the whole input, which re-sends the earlier turns: "thank you" comes first.
    Rule(match="thank you", reply=REPLY),
    Rule(match="story", reply="Once upon a time " + "there was a light. " * 100),
    Rule(reply=REPLY),
]


@pytest.fixture(scope="module")
def newest_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the newest release and without this project."""
    venv = tmp_path_factory.mktemp("newest") / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    uv("venv", "--quiet", "--python", sys.executable, str(venv), env=env)  # HA needs 3.14.2
    python = str(venv / "bin" / "python")
    uv("pip", "install", "--quiet", "--python", python, "--require-hashes", "-r", str(REQUIREMENTS), env=env)
    absent = subprocess.run(
        [python, "-c", "import rkllm_runtime"], cwd=venv, capture_output=True, check=False
    )
    assert absent.returncode != 0
    return venv


@pytest.fixture(scope="module", params=["in_process", "child"])
def newest_home(
    request: pytest.FixtureRequest, newest_venv: Path, dist: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevHome]:
    """That environment's ``hass`` with a copied integration, its model in each mode."""
    pytest_socket.enable_socket()  # this fixture asks the release's version; the tests talk to it
    root = tmp_path_factory.mktemp(request.param)
    model = EmulatedModel(rules=RULES, decode_tps=100).write(root / "model.rkllm")
    (root / "tokenizer.json").symlink_to(tokenizer_json())  # the model's vocabulary, for evaluations
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {
        "UV_FIND_LINKS": str(dist),
        "UV_OFFLINE": "1",
    }
    python = str(newest_venv / "bin" / "python")
    options = ("--install-requirements", "--mode", request.param)
    with running_dev_home(python, root / "config", build_cached("1.3"), model, *options, env=env) as home:
        version = home.request("GET", "/api/config")["version"]
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            print(f"\nHome Assistant {version}, the model {WHERE[request.param]}")
        assert f"homeassistant=={version} " in REQUIREMENTS.read_text()
        yield home


def converse(home: DevHome, text: str, conversation_id: str | None = None) -> dict[str, Any]:
    """One turn through the REST API; returns the response with its conversation id."""
    body = {"text": text, "agent_id": AGENT} | (
        {"conversation_id": conversation_id} if conversation_id else {}
    )
    answer: dict[str, Any] = home.request("POST", "/api/conversation/process", body)
    return answer


def speech(answer: dict[str, Any]) -> str:
    text: str = answer["response"]["speech"]["plain"]["speech"]
    return text


def state_of(home: DevHome, suffix: str) -> dict[str, Any]:
    """The state of the one entity whose id ends with ``suffix``."""
    (state,) = [s for s in home.request("GET", "/api/states") if s["entity_id"].endswith(suffix)]
    return state


def until(condition: Callable[[], bool]) -> None:
    for _ in range(300):
        if condition():
            return
        time.sleep(0.05)
    pytest.fail("the condition never held")


def test_a_conversation_with_tools(newest_home: DevHome) -> None:
    assert state_of(newest_home, "light.kitchen_light")["state"] == "off"
    answer = converse(newest_home, "Please turn the kitchen light on")
    assert speech(answer) == "Turned on the light"  # Home Assistant's own confirmation: no second run
    assert state_of(newest_home, "light.kitchen_light")["state"] == "on"


def test_a_too_long_turn_is_refused_and_the_conversation_goes_on(newest_home: DevHome) -> None:
    """The release keeps the failed turn in the chat log: it must not reach the model again."""
    first = converse(newest_home, "hello there")
    refused = converse(newest_home, TOO_LONG, first["conversation_id"])
    assert refused["response"]["response_type"] == "error"
    assert "the context holds 4096" in speech(refused)
    for text in ("hello again", "and hello once more"):
        assert speech(converse(newest_home, text, first["conversation_id"])) == REPLY


def test_a_second_message_while_one_runs_is_told_busy(newest_home: DevHome) -> None:
    first = converse(newest_home, "hello there")
    with ThreadPoolExecutor(1) as pool:
        story = pool.submit(converse, newest_home, "tell me a story", first["conversation_id"])
        until(lambda: state_of(newest_home, "_model_state")["state"] == "generating")
        busy = converse(newest_home, "hello again", first["conversation_id"])
        assert speech(busy) == "This conversation is busy with another message"
        assert speech(story.result()).startswith("Once upon a time")
    assert speech(converse(newest_home, "thank you", first["conversation_id"])) == REPLY


def test_the_ai_task_and_the_generate_action(newest_home: DevHome) -> None:
    task = state_of(newest_home, "ai_task.rkllm_ai_task")["entity_id"]
    generated = newest_home.request(
        "POST",
        "/api/services/ai_task/generate_data?return_response",
        {"task_name": "greeting", "instructions": "Say hello", "entity_id": task},
    )
    assert generated["service_response"]["data"] == REPLY
    (entry,) = newest_home.request("GET", "/api/config/config_entries/entry?domain=rkllm")
    answer = newest_home.request(
        "POST",
        "/api/services/rkllm/generate?return_response",
        {"config_entry_id": entry["entry_id"], "prompt": "Say hello"},
    )
    assert answer["service_response"]["text"] == REPLY


def test_a_reload_answers_again_without_a_warning_naming_the_integration(newest_home: DevHome) -> None:
    (entry,) = newest_home.request("GET", "/api/config/config_entries/entry?domain=rkllm")
    reloaded = newest_home.request("POST", f"/api/config/config_entries/entry/{entry['entry_id']}/reload")
    assert reloaded == {"require_restart": False}
    until(lambda: state_of(newest_home, AGENT)["state"] != "unavailable")
    assert speech(converse(newest_home, "hello there")) == REPLY
    log = (newest_home.config / "home-assistant.log").read_text()
    assert [line for line in log.splitlines() if "deprecat" in line.lower() and "rkllm" in line.lower()] == []


def test_an_evaluation_answers_with_probabilities(newest_home: DevHome) -> None:
    task = state_of(newest_home, "ai_task.rkllm_ai_task")
    evaluate = 8  # AITaskEntityFeature.EVALUATE
    assert task["attributes"]["supported_features"] & evaluate
    questions = {
        "lit": {"type": "noul", "instructions": "Is the kitchen light on?"},
        "room": {
            "type": "choice",
            "instructions": "Which room is lit?",
            "criteria": {"hall": "the way in", "kitchen": "where food is cooked"},
        },
        "brightness": {
            "type": "score",
            "instructions": "How bright is it?",
            "criteria": ["dark", "dim", "bright"],
        },
    }
    answered = newest_home.request(
        "POST",
        "/api/services/ai_task/evaluate?return_response",
        {
            "task_name": "lights",
            "entity_id": task["entity_id"],
            "state": {"kitchen": "on"},
            "questions": questions,
        },
    )
    answers = answered["service_response"]["answers"]
    assert answers["lit"]["type"] == "noul"
    assert answers["lit"]["noul"] > 0.9
    assert answers["room"]["choice"] == "kitchen"
    assert sum(answers["room"]["probabilities"].values()) == pytest.approx(1)
    assert answers["brightness"]["probabilities"][2] > 0.9
    assert 1.8 < answers["brightness"]["score"] <= 2


def test_an_evaluation_with_an_attachment_names_it(newest_home: DevHome) -> None:
    (newest_home.config / "media" / "porch.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    photo = "media-source://media_source/local/porch.jpg"
    with pytest.raises(urllib.error.HTTPError) as refused:
        newest_home.request(
            "POST",
            "/api/services/ai_task/evaluate?return_response",
            {
                "task_name": "porch",
                "entity_id": state_of(newest_home, "ai_task.rkllm_ai_task")["entity_id"],
                "questions": {"parcel": {"type": "noul", "instructions": "Is there a parcel?"}},
                "attachments": [{"media_content_id": photo, "media_content_type": "image/jpeg"}],
            },
        )
    message = json.loads(refused.value.read())["message"]
    assert message.startswith(f"The model on the NPU reads text only: it cannot use the attachments {photo}")
