"""The Assist conversation agent, through the real ctypes path into the emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components import conversation
from homeassistant.components.conversation import chat_log as chat_log_module
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import intent, llm
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm import entity as entity_module
from custom_components.rkllm.const import CONF_KV_STRATEGY
from custom_components.rkllm.entity import chat_messages
from custom_components.rkllm.runtime_log import ROUTER
from custom_components.rkllm.schemas import default_conversation_options
from rkllm_runtime import RunOptions
from rkllm_runtime.abi.common import RKLLMInferMode
from rkllm_runtime.chat import MAX_WAITING, EngineState
from rkllm_runtime.chat.contract import ModelEngine
from rkllm_runtime.remote.client import RemoteEngine
from tests.conftest import abis_with
from tests.integration.conftest import IN_EVERY_MODE, until

AGENT = "conversation.rkllm_conversation"


async def converse(
    hass: HomeAssistant, text: str, conversation_id: str | None = None
) -> conversation.ConversationResult:
    return await conversation.async_converse(hass, text, conversation_id, Context(), agent_id=AGENT)


def chat_log_of(hass: HomeAssistant, conversation_id: str) -> list[conversation.Content]:
    return list(hass.data[chat_log_module.DATA_CHAT_LOGS][conversation_id].content)


@IN_EVERY_MODE
async def test_plain_answer(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    result = await converse(hass, "hello there")
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert result.response.speech["plain"]["speech"] == "Hello! How can I help?"


@IN_EVERY_MODE
async def test_turn_on_a_light_through_a_tool_call(
    hass: HomeAssistant, init_integration: MockConfigEntry, kitchen_light: str
) -> None:
    """A done action is confirmed in Home Assistant's own words: one run of the model, not two."""
    engine = init_integration.runtime_data.engine
    assert hass.states.get(kitchen_light).state == "off"
    result = await converse(hass, "Please turn the kitchen light on")
    assert hass.states.get(kitchen_light).state == "on"
    assert result.response.speech["plain"]["speech"] == "Turned on the light"  # HassTurnOn's response
    assert engine.stats.requests == 1
    content = chat_log_of(hass, result.conversation_id)
    calls = [c for c in content if isinstance(c, conversation.AssistantContent) and c.tool_calls]
    assert calls[0].tool_calls[0].tool_name == "intent__HassTurnOn"  # mapped from "HassTurnOn"
    assert calls[0].tool_calls[0].tool_args == {"name": "Kitchen light"}
    results = [c for c in content if isinstance(c, conversation.ToolResultContent)]
    assert not results[0].result.error
    assert isinstance(content[-1], conversation.AssistantContent)
    assert content[-1].content == "Turned on the light"


@IN_EVERY_MODE
async def test_a_call_written_as_text_runs_and_is_not_spoken(
    hass: HomeAssistant, init_integration: MockConfigEntry, kitchen_light: str
) -> None:
    result = await converse(hass, "turn on the kitchen light")
    assert hass.states.get(kitchen_light).state == "on"
    assert result.response.speech["plain"]["speech"] == "Turned on the light"
    content = chat_log_of(hass, result.conversation_id)
    (call,) = [c for c in content if isinstance(c, conversation.AssistantContent) and c.tool_calls]
    assert not call.content  # neither the lead, the fenced JSON nor the explanation
    assert [(t.tool_name, t.tool_args) for t in call.tool_calls] == [
        ("intent__HassTurnOn", {"name": "Kitchen light"})
    ]


@pytest.mark.parametrize("conversation_options", [{**default_conversation_options(), "action_speech": False}])
async def test_the_models_own_confirmation_is_one_switch_away(
    hass: HomeAssistant, init_integration: MockConfigEntry, kitchen_light: str
) -> None:
    engine = init_integration.runtime_data.engine
    result = await converse(hass, "Please turn the kitchen light on")
    assert hass.states.get(kitchen_light).state == "on"
    assert result.response.speech["plain"]["speech"] == "The kitchen light is on."
    assert engine.stats.requests == 2  # the call, then the answer to its result


async def test_a_query_still_goes_back_to_the_model(
    hass: HomeAssistant, init_integration: MockConfigEntry, kitchen_light: str
) -> None:
    engine = init_integration.runtime_data.engine
    result = await converse(hass, "is the kitchen light on right now")
    assert engine.stats.requests == 2  # GetLiveContext answers a question: the model speaks
    assert result.response.speech["plain"]["speech"] == "It is off."


async def test_the_confirmation_speaks_the_conversations_language(
    hass: HomeAssistant, init_integration: MockConfigEntry, kitchen_light: str
) -> None:
    engine = init_integration.runtime_data.engine
    result = await conversation.async_converse(
        hass, "Please turn the kitchen light on", None, Context(), language="de", agent_id=AGENT
    )
    assert hass.states.get(kitchen_light).state == "on"
    assert result.response.speech["plain"]["speech"] == "Licht eingeschaltet"
    assert engine.stats.requests == 1


@IN_EVERY_MODE
async def test_malformed_call_gets_an_error_result_then_a_retry_works(
    hass: HomeAssistant, init_integration: MockConfigEntry, kitchen_light: str
) -> None:
    """The engine answers the unreadable call with an error; the chat log only sees the retry."""
    engine = init_integration.runtime_data.engine
    result = await converse(hass, "light up the garden path")
    assert engine.stats.malformed_calls == 1  # the emulator only retries when told "MalformedToolCall"
    content = chat_log_of(hass, result.conversation_id)
    calls = [c for c in content if isinstance(c, conversation.AssistantContent) and c.tool_calls]
    assert [call.tool_name for c in calls for call in c.tool_calls] == ["intent__HassTurnOn"]
    results = [c for c in content if isinstance(c, conversation.ToolResultContent)]
    assert len(results) == 1
    assert not results[0].result.error
    assert hass.states.get(kitchen_light).state == "on"
    assert result.response.speech["plain"]["speech"] == "Turned on the light"
    assert engine.stats.last is not None
    assert engine.stats.last.runs == 2  # the malformed call and the retry, in one request


@pytest.mark.parametrize("conversation_options", [{"think": True, "llm_hass_api": []}], indirect=False)
@IN_EVERY_MODE
async def test_thinking_is_never_spoken(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    result = await converse(hass, "what is the weather like")
    assert result.response.speech["plain"]["speech"] == "It is sunny."
    answer = chat_log_of(hass, result.conversation_id)[-1]
    assert isinstance(answer, conversation.AssistantContent)
    assert answer.thinking_content is not None
    assert "asks about the weather" in answer.thinking_content
    assert "<think>" not in (answer.content or "")


@pytest.mark.parametrize(
    ("entry_data", "follow_up_prefill"),
    [({}, (20, 60)), ({CONF_KV_STRATEGY: "reuse"}, (0, 20))],
    indirect=["entry_data"],
    ids=["conservative", "reuse"],
)
async def test_follow_up_keeps_the_conversation(
    hass: HomeAssistant, init_integration: MockConfigEntry, follow_up_prefill: tuple[int, int]
) -> None:
    """Conservative (the default) re-sends the short history; reuse sends only the new turn."""
    engine = init_integration.runtime_data.engine
    first = await converse(hass, "hello there")
    assert engine.stats.last is not None
    assert not engine.stats.last.cache_hit  # the Assist prompt is read once
    await converse(hass, "hello again", first.conversation_id)
    assert engine.stats.last.cache_hit
    low, high = follow_up_prefill
    assert low < engine.stats.last.perf.prefill_tokens < high


@IN_EVERY_MODE
async def test_generation_error_is_reported(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    result = await converse(hass, "please fail now")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert "The model failed while answering" in result.response.speech["plain"]["speech"]
    again = await converse(hass, "hello there")
    assert again.response.speech["plain"]["speech"] == "Hello! How can I help?"


TOO_LONG = "word " * 40_000  # 200,000 characters: more than a 4,096-token context can ever hold


@IN_EVERY_MODE
async def test_a_too_long_turn_never_poisons_the_conversation(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The too-long turn gets the clear answer; the turns after it are answered.

    Home Assistant 2026.11 keeps the failed turn in the chat log, closed by an "Error: ..." reply
    (2026.10 drops it): the log is given that turn here, as 2026.11 records it.
    """
    first = await converse(hass, "hello there")
    # In a task of its own, as a request is: 2026.10 leaves a failed turn's chat log as the
    # current one of the context that ran it.
    refused = await hass.async_create_task(converse(hass, TOO_LONG, first.conversation_id))
    assert refused.response.response_type is intent.IntentResponseType.ERROR
    speech = refused.response.speech["plain"]["speech"]
    assert "the context holds 4096" in speech
    log = hass.data[chat_log_module.DATA_CHAT_LOGS][first.conversation_id]
    log.content += [
        conversation.UserContent(TOO_LONG),
        conversation.AssistantContent(agent_id=AGENT, content=f"Error: {speech}"),
    ]
    for text in ("hello again", "and hello once more"):
        answer = await converse(hass, text, first.conversation_id)
        assert answer.response.speech["plain"]["speech"] == "Hello! How can I help?"


@IN_EVERY_MODE
async def test_an_input_the_runtime_cannot_hold_is_too_long_not_a_failure(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Short enough to pass the check before queueing, too long for the runtime's context."""
    refused = await hass.async_create_task(converse(hass, "word " * 20_000))
    assert refused.response.speech["plain"]["speech"].startswith("The request is too long for the model")
    assert (await converse(hass, "hello there")).response.speech["plain"][
        "speech"
    ] == "Hello! How can I help?"


async def test_failed_turns_are_left_out_where_home_assistant_keeps_them(
    hass: HomeAssistant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 2026.11 the failed turn, its tool calls and results and the error reply are not sent."""
    monkeypatch.setattr(entity_module, "KEEPS_FAILED_TURNS", True)
    call = llm.ToolInput(tool_name="HassTurnOn", tool_args={}, id="call_1")
    log = conversation.ChatLog(hass, "id")
    log.content += [
        conversation.UserContent("hi"),
        conversation.AssistantContent(agent_id=AGENT, content="Hello!"),
        conversation.UserContent("turn it on"),
        conversation.AssistantContent(agent_id=AGENT, content=None, tool_calls=[call]),
        conversation.ToolResultContent(AGENT, "call_1", "HassTurnOn", llm.ToolResult({"error": "x"}, True)),
        conversation.AssistantContent(agent_id=AGENT, content="Error: The model failed while answering"),
        conversation.UserContent("hello again"),
    ]
    assert [(m.role, m.content) for m in chat_messages(log)] == [
        ("user", "hi"), ("assistant", "Hello!"), ("user", "hello again"),
    ]  # fmt: skip
    monkeypatch.setattr(entity_module, "KEEPS_FAILED_TURNS", False)  # 2026.10: a reply of the model's own
    assert len(chat_messages(log)) == 7


async def story_running(
    hass: HomeAssistant, entry: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Task[conversation.ConversationResult]:
    """A long answer, generating (slowed down) when this returns."""
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")
    task = hass.async_create_task(converse(hass, "tell me a story"))
    await until(lambda: entry.runtime_data.engine.runtime.is_running)
    return task


async def test_cancelled_request_aborts_and_the_next_works(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = init_integration.runtime_data.engine
    task = await story_running(hass, init_integration, monkeypatch)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not engine.runtime.is_running
    monkeypatch.delenv("RKLLM_EMU_DECODE_TPS")
    result = await converse(hass, "hello there")
    assert result.response.speech["plain"]["speech"] == "Hello! How can I help?"


@pytest.fixture
def slow_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode at 400 tokens/s, in every process started from now on."""
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "400")


async def queued(engine: ModelEngine) -> int:
    """Requests waiting for the model (a remote engine asks its server)."""
    if isinstance(engine, RemoteEngine):
        await engine.refresh()
    return engine.status.waiting


@IN_EVERY_MODE
async def test_requests_beyond_the_queue_are_told_busy(
    hass: HomeAssistant, slow_decode: None, init_integration: MockConfigEntry
) -> None:
    """The same queue in every mode: MAX_WAITING requests wait, the next is told the model is busy."""
    engine = init_integration.runtime_data.engine
    running = hass.async_create_task(converse(hass, "tell me a story"))
    await until(lambda: engine.state is EngineState.GENERATING)
    waiting = [hass.async_create_task(converse(hass, "hello there")) for _ in range(MAX_WAITING)]
    async with asyncio.timeout(10):
        while await queued(engine) < MAX_WAITING:  # noqa: ASYNC110 - the count lives in another process
            await asyncio.sleep(0.01)
    busy = await converse(hass, "hello there")
    assert busy.response.response_type is intent.IntentResponseType.ERROR
    assert (
        busy.response.speech["plain"]["speech"]
        == "The model is busy with other requests. Try again in a moment"
    )
    assert (await running).response.speech["plain"]["speech"].startswith("Once upon a time")
    for task in waiting:  # served in order once the first finished
        assert (await task).response.speech["plain"]["speech"] == "Hello! How can I help?"


async def test_token_stats_go_to_the_trace(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    traces: list[dict] = []
    original = conversation.ChatLog.async_trace

    def record(self: conversation.ChatLog, details: dict) -> None:
        traces.append(details)
        original(self, details)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conversation.ChatLog, "async_trace", record)
        await converse(hass, "hello there")
    stats = [t["stats"] for t in traces if "stats" in t]
    assert stats[-1]["output_tokens"] > 0
    assert stats[-1]["input_tokens"] > 500  # the Assist prompt with its tool schemas
    assert stats[-1]["cached_input_tokens"] == 0


async def test_restart_reads_the_prompt_cache_file(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """After a reload (as after a restart) the Assist prompt comes from the cache file."""
    await converse(hass, "hello there")
    cold = init_integration.runtime_data.engine.stats.last
    assert cold is not None
    cache_dir = Path(hass.config.path(".storage", "rkllm", "prompt_cache"))
    assert len(await hass.async_add_executor_job(lambda: list(cache_dir.glob("*.rkcache")))) == 1
    assert await hass.config_entries.async_reload(init_integration.entry_id)
    await converse(hass, "good evening")
    warm = init_integration.runtime_data.engine.stats.last
    assert warm is not None
    assert warm.cache_hit
    assert warm.perf.prefill_tokens < 20
    assert warm.cached_tokens > cold.prompt_tokens - 20


async def test_unwritable_storage_answers_without_prompt_cache_files(
    hass: HomeAssistant, config_entry: MockConfigEntry, kitchen_light: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A storage directory that cannot be written only costs the restart speed-up, and one warning."""
    storage = Path(hass.config.path(".storage"))
    await hass.async_add_executor_job(lambda: storage.mkdir(parents=True, exist_ok=True))
    await hass.async_add_executor_job((storage / "rkllm").write_text, "not a directory")
    assert await async_setup_component(hass, "conversation", {})
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    for text in ("hello there", "hello again", "turn the kitchen light on"):
        result = await converse(hass, text)
        assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert hass.states.get(kitchen_light).state == "on"
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "prompt-cache" in r.getMessage()]
    assert len(warnings) == 1
    assert await hass.config_entries.async_unload(config_entry.entry_id)


@IN_EVERY_MODE
@pytest.mark.parametrize("text", ["turn on the lamp \udc80", "turn on\0 the lamp"])
async def test_text_a_c_string_cannot_carry_gets_a_translated_answer(
    hass: HomeAssistant, init_integration: MockConfigEntry, text: str
) -> None:
    result = await converse(hass, text)
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert result.response.speech["plain"]["speech"].startswith("The text cannot be sent to the model")


async def test_shutdown_says_the_request_was_cancelled(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await story_running(hass, init_integration, monkeypatch)
    await init_integration.runtime_data.engine.aclose()  # what Home Assistant's stop event does
    result = await task
    assert result.response.response_type is intent.IntentResponseType.ERROR
    speech = result.response.speech["plain"]["speech"]
    assert speech.startswith("The request was cancelled")
    assert "failed" not in speech


async def test_the_runtime_log_reaches_home_assistants_log(
    hass: HomeAssistant, config_entry: MockConfigEntry, kitchen_light: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Set up within the test, so the runtime writes to the stderr the integration took over."""
    assert await async_setup_component(hass, "conversation", {})
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    result = await converse(hass, "lamp " * 5000)  # fits the quick check, not the context
    assert result.response.response_type is intent.IntentResponseType.ERROR
    await hass.async_add_executor_job(hass.data[ROUTER].stop)  # delivers everything written so far
    await hass.async_block_till_done()
    runtime_records = [r for r in caplog.records if r.name == "custom_components.rkllm.runtime"]
    assert any(r.levelname == "INFO" and "rkllm-runtime version" in r.getMessage() for r in runtime_records)
    assert any(
        r.levelname == "ERROR" and "does not fit in max_context_len 4096" in r.getMessage()
        for r in runtime_records
    )
    assert await hass.config_entries.async_unload(config_entry.entry_id)


# rkllm_createDefaultParam()'s, a turn with tools', and what a subentry has with its own settings
RUNTIMES = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}
WITH_TOOLS = {**RUNTIMES, "top_k": 1}
OWN = {**default_conversation_options(), "recommended": False, "max_new_tokens": 256, "max_history": 10}
EARLIER = {"temperature": 0.7, "top_k": 20, "top_p": 0.8, "repeat_penalty": 1.05}


@pytest.mark.parametrize(
    ("conversation_options", "sent"),
    [
        (default_conversation_options(), WITH_TOOLS),
        ({**default_conversation_options(), "llm_hass_api": []}, RUNTIMES),
        ({**OWN, "temperature": 0.3}, {**WITH_TOOLS, "temperature": 0.3}),
        ({**OWN, **EARLIER}, EARLIER),  # stored when the integration had defaults of its own: honoured
    ],
    ids=["recommended", "recommended without tools", "temperature only", "stored earlier"],
)
@abis_with(lambda abi: abi.PER_RUN_SAMPLING)
async def test_sampling_not_set_is_greedy_with_tools_else_the_runtimes(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    monkeypatch: pytest.MonkeyPatch,
    sent: dict[str, float],
) -> None:
    runtime = init_integration.runtime_data.engine.runtime
    seen: list[dict[str, float]] = []
    build = runtime._build_infer_param

    def recording(options: RunOptions, mode: RKLLMInferMode) -> tuple[Any, list[Any]]:
        c_infer, keep_alive = build(options, mode)
        sampling = c_infer.sampling_params.contents
        seen.append({name: getattr(sampling, name) for name in sent})
        return c_infer, keep_alive

    monkeypatch.setattr(runtime, "_build_infer_param", recording)
    result = await converse(hass, "hello there")
    assert result.response.speech["plain"]["speech"] == "Hello! How can I help?"
    assert seen == [pytest.approx(sent)]
