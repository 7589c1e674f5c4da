"""POST /rkllm/evaluate, and the remote engine that calls it: the answers the server's engine gives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from rkllm_runtime.chat.evaluate import EvaluationRequest, Question, QuestionKind
from rkllm_runtime.emulator import EmulatedModel, Rule
from rkllm_runtime.emulator.tokenizer_json import tokenizer_json
from rkllm_runtime.errors import UnknownModelError
from rkllm_runtime.remote.client import RemoteEngine
from tests.server.conftest import MODEL, RunningServer, launch

STATE = '{"kitchen light": "on"}'
LIT = Question(QuestionKind.NOUL, "Is the kitchen light on?")
ROOM = Question(
    QuestionKind.CHOICE, "Which room is lit?", (("hall", "the way in"), ("kitchen", "for cooking"))
)


@pytest.fixture(scope="module")
def evaluating(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("evaluate")
    rules = [Rule(match="Is the kitchen light on?", reply="yes"), Rule(match="Which room", reply="B")]
    model = EmulatedModel(rules=rules).write(directory / "model.rkllm")
    (directory / "tokenizer.json").symlink_to(tokenizer_json())  # the model's vocabulary, beside it
    running = launch(library, {MODEL: model}, [], directory / "server.log")
    yield running
    running.stop()
    running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def test_the_remote_engine_gets_the_servers_answers(
    evaluating: RunningServer, session: aiohttp.ClientSession
) -> None:
    engine = RemoteEngine(session, evaluating.url, MODEL, None)
    result = await engine.evaluate(EvaluationRequest(STATE, {"lit": LIT, "room": ROOM}))
    assert result.answers["lit"]["yes"] > 0.99
    assert result.answers["room"]["kitchen"] > 0.99
    assert result.perf.prefill_tokens > 0
    assert engine.available
    missing = RemoteEngine(session, evaluating.url, "no-such-model", None)
    with pytest.raises(UnknownModelError):
        await missing.evaluate(EvaluationRequest(STATE, {"lit": LIT}))


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (None, "not an evaluation request"),
        ({"state": 3, "questions": {}}, "non-empty"),
        ({"state": "{}", "questions": {"q": {"kind": "noul"}}}, "instructions"),
    ],
)
def test_a_request_that_is_not_one_is_400_naming_why(
    evaluating: RunningServer, request_: object, named: str
) -> None:
    response = evaluating.http("POST", "/rkllm/evaluate", json={"model": MODEL, "request": request_})
    assert response.status_code == 400
    assert named in response.json()["error"]
