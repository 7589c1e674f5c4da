"""KV planning as a pure function: a table of cache states and requests."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from rkllm_runtime import PerfStats, Role
from rkllm_runtime.chat import ChatRequest, KVCacheState, KVMode, KVReset, Message, ToolCall, ToolSpec
from rkllm_runtime.chat.messages import fingerprint, render_tools, system_key
from rkllm_runtime.chat.plan import CONTEXT_BUDGET, Plan, RunEnd, is_hit, overflow_suspected, plan, settle

SYSTEM = "You are a voice assistant."
TOOLS = (ToolSpec("HassTurnOn", {"type": "object"}, "Turns on"),)
KEY = system_key(SYSTEM, render_tools(TOOLS))
HI, REPLY = Message("user", "hi"), Message("assistant", "Hello!")
MORE = Message("user", "and more")
EARLIER = "Earlier in this conversation:\n"
CALL = Message("assistant", "", tool_calls=(ToolCall("HassTurnOn", {"name": "x"}, id="call_1"),))
RESULT = Message("tool", '{"success": true}', name="HassTurnOn")


def holding(
    *messages: Message, conversation_id: str | None = "a", kv_tokens: int = 100, in_kv: bool = True
) -> KVCacheState:
    """A cache state with the system prompt prefilled and ``messages`` answered (kept in the cache or not)."""
    return KVCacheState(
        KEY, True, conversation_id, len(messages), fingerprint(messages), in_kv=in_kv, kv_tokens=kv_tokens
    )


@dataclass(frozen=True)
class Case:
    cache: KVCacheState
    messages: tuple[Message, ...]
    set_system: bool
    reset: KVReset
    hit: bool
    input: str
    conversation_id: str | None = "a"
    mode: KVMode = KVMode.REUSE


REUSE, CONSERVATIVE, NAIVE = KVMode.REUSE, KVMode.CONSERVATIVE, KVMode.NAIVE
QUOTED = EARLIER + "User: hi\nAssistant: Hello!\n\nand more"
CASES = {
    "cold": Case(KVCacheState(), (HI,), True, KVReset.ALL, True, "hi"),
    "new-conversation": Case(holding(HI, REPLY), (HI,), False, KVReset.KEEP_SYSTEM, True, "hi", "b"),
    "follow-up": Case(holding(HI, REPLY), (HI, REPLY, MORE), False, KVReset.NONE, True, "and more"),
    "stateless-follow-up": Case(
        holding(HI, REPLY, conversation_id=None), (HI, REPLY, MORE),
        False, KVReset.NONE, True, "and more", None,
    ),
    "reply-whitespace-trimmed": Case(
        holding(HI, Message("assistant", " Hello!\n")), (HI, REPLY, MORE),
        False, KVReset.NONE, True, "and more",
    ),
    "other-reply-is-another-conversation": Case(
        holding(HI, Message("assistant", "Hey"), conversation_id=None), (HI, REPLY, MORE),
        False, KVReset.KEEP_SYSTEM, False, QUOTED, None,
    ),
    "tool-result": Case(holding(HI, CALL), (HI, CALL, RESULT), False, KVReset.NONE, True, RESULT.content),
    "conservative-tool-result-quotes-compactly": Case(
        holding(HI, CALL, in_kv=False), (HI, CALL, RESULT), False, KVReset.NONE, True,
        EARLIER + 'User: hi\nAssistant: <tool_call>{"name":"HassTurnOn","arguments":{"name":"x"}}</tool_call>'
        "\n\n" + RESULT.content,
        mode=CONSERVATIVE,
    ),
    "over-budget": Case(
        holding(HI, REPLY, MORE, REPLY, kv_tokens=4096), (HI, REPLY, MORE, REPLY, HI),
        False, KVReset.KEEP_SYSTEM, False, EARLIER + "User: and more\nAssistant: Hello!\n\nhi",
    ),
    "reuse-after-a-keep-history-0-run": Case(
        holding(HI, REPLY, in_kv=False), (HI, REPLY, MORE), False, KVReset.KEEP_SYSTEM, False, QUOTED
    ),
    "conservative-cold": Case(KVCacheState(), (HI,), True, KVReset.ALL, True, "hi", mode=CONSERVATIVE),
    "conservative-follow-up-quotes-the-history": Case(
        holding(HI, REPLY, in_kv=False), (HI, REPLY, MORE),
        False, KVReset.NONE, True, QUOTED, mode=CONSERVATIVE,
    ),
    "conservative-new-conversation": Case(
        holding(HI, REPLY, in_kv=False), (HI,), False, KVReset.NONE, True, "hi", "b", mode=CONSERVATIVE
    ),
    "naive": Case(holding(HI, REPLY), (HI, REPLY, MORE), True, KVReset.ALL, False, QUOTED, mode=NAIVE),
}  # fmt: skip


def test_volatile_context_goes_with_the_new_user_text_only() -> None:
    request = ChatRequest(SYSTEM, (HI, REPLY, MORE), tools=TOOLS, conversation_id="a", context="It is noon.")
    planned = plan(holding(HI, REPLY, in_kv=False), request, kv_mode=CONSERVATIVE, max_context_len=4096)
    assert planned.input.text == EARLIER + "User: hi\nAssistant: Hello!\n\nIt is noon.\nand more"
    assert (
        planned.system_key
        == plan(
            KVCacheState(), replace(request, context=""), kv_mode=CONSERVATIVE, max_context_len=4096
        ).system_key
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan(case: Case) -> None:
    request = ChatRequest(SYSTEM, case.messages, tools=TOOLS, conversation_id=case.conversation_id)
    planned = plan(case.cache, request, kv_mode=case.mode, max_context_len=4096)
    hit = is_hit(planned, loaded_prompt_cache=True)  # a system prompt set now is restored from its file
    assert (planned.set_system, planned.reset, hit) == (case.set_system, case.reset, case.hit)
    assert planned.input.text == case.input
    assert planned.input.role is (Role.TOOL if case.messages[-1].role == "tool" else Role.USER)
    assert planned.options.keep_history is (case.mode is REUSE)
    assert planned.conversation.cached_messages == len(case.messages) + 1
    assert planned.conversation.in_kv is (case.mode is REUSE)
    assert planned.system_cached is not case.set_system
    assert planned.use_prompt_cache is (case.set_system and case.mode is not NAIVE)


def test_trimmed_history_stays_trimmed() -> None:
    """Once the budget dropped turns of a re-sent conversation, later turns do not bring them back."""
    cache = replace(holding(HI, REPLY, MORE, REPLY, in_kv=False), history_start=2)
    request = ChatRequest(SYSTEM, (HI, REPLY, MORE, REPLY, HI), tools=TOOLS, conversation_id="a")
    planned = plan(cache, request, kv_mode=CONSERVATIVE, max_context_len=4096)
    assert planned.input.text == EARLIER + "User: and more\nAssistant: Hello!\n\nhi"
    assert planned.conversation.history_start == 2


def test_changed_tools_set_the_system_again() -> None:
    request = ChatRequest(SYSTEM, (HI,), tools=(), conversation_id="a")
    planned = plan(holding(), request, kv_mode=KVMode.REUSE, max_context_len=4096)
    assert planned.set_system
    assert planned.tools == ""


def test_budget_threshold() -> None:
    request = ChatRequest(SYSTEM, (HI, REPLY, MORE), tools=TOOLS, conversation_id="a")
    within = holding(HI, REPLY, kv_tokens=int(CONTEXT_BUDGET * 1000))
    assert plan(within, request, kv_mode=KVMode.REUSE, max_context_len=1000).reset is KVReset.NONE
    beyond = holding(HI, REPLY, kv_tokens=int(CONTEXT_BUDGET * 1000) + 1)
    assert plan(beyond, request, kv_mode=KVMode.REUSE, max_context_len=1000).reset is KVReset.KEEP_SYSTEM


def test_history_too_long_to_send_goes_oldest_turns_first() -> None:
    """A turn that never fitted (kept by the client with its error) is not sent again."""
    huge = Message("user", "word " * 40_000)
    failed = Message("assistant", "Error: the input needs at least 6250 tokens")
    messages = (HI, REPLY, huge, failed, MORE, REPLY, Message("user", "last"))
    request = ChatRequest(SYSTEM, messages, TOOLS, conversation_id="a")
    step = plan(KVCacheState(), request, kv_mode=CONSERVATIVE, max_context_len=4096)
    assert step.input.text == EARLIER + "User: and more\nAssistant: Hello!\n\nlast"
    assert step.conversation.history_start == 4


def test_history_that_fits_is_sent_whole() -> None:
    messages = (HI, REPLY, Message("user", "word " * 1_000), REPLY, MORE)
    request = ChatRequest(SYSTEM, messages, TOOLS, conversation_id="a")
    step = plan(KVCacheState(), request, kv_mode=CONSERVATIVE, max_context_len=4096)
    assert step.input.text.startswith(EARLIER + "User: hi\n")
    assert step.conversation.history_start == 0


@pytest.mark.parametrize(("length", "suspected"), [(3_000, False), (5_000, True)])
def test_a_silent_failure_of_an_input_that_may_not_fit_is_an_overflow(length: int, suspected: bool) -> None:
    """A token is at least one byte: an input shorter than the context in bytes certainly fits."""
    request = ChatRequest("", (Message("user", "x" * length),))
    step = plan(KVCacheState(), request, kv_mode=CONSERVATIVE, max_context_len=4096)
    overflow = overflow_suspected(step, request, 4096)
    assert (overflow is not None) == suspected
    if overflow is not None:
        assert (overflow.tokens, overflow.limit) == (4097, 4096)


ASSIST_PROMPT = "word " * 3_700  # about 3,700 tokens: Home Assistant's Assist prompt for a 25-device home
QUESTION = Message("user", "turn on x")
SECOND_CALL = Message("assistant", "", tool_calls=(ToolCall("HassTurnOn", {"name": "y"}, id="call_2"),))
QUOTED_CALL = 'Assistant: <tool_call>{"name":"HassTurnOn","arguments":{"name":"x"}}</tool_call>'
QUOTED_SECOND_CALL = 'Assistant: <tool_call>{"name":"HassTurnOn","arguments":{"name":"y"}}</tool_call>'


@dataclass(frozen=True)
class TurnCase:
    system: str
    cache: KVCacheState
    messages: tuple[Message, ...]
    input: str
    mode: KVMode = CONSERVATIVE


TURN_CASES = {
    "room-for-everything": TurnCase(
        SYSTEM, holding(HI, REPLY, QUESTION, CALL, in_kv=False), (HI, REPLY, QUESTION, CALL, RESULT),
        f"{EARLIER}User: hi\nAssistant: Hello!\nUser: turn on x\n{QUOTED_CALL}\n\n{RESULT.content}",
    ),
    "large-prompt-keeps-the-current-turn": TurnCase(
        ASSIST_PROMPT, holding(HI, REPLY, QUESTION, CALL, in_kv=False), (HI, REPLY, QUESTION, CALL, RESULT),
        f"{EARLIER}User: turn on x\n{QUOTED_CALL}\n\n{RESULT.content}",
    ),
    "large-prompt-second-round-of-calls": TurnCase(
        ASSIST_PROMPT, holding(QUESTION, CALL, RESULT, SECOND_CALL, in_kv=False),
        (QUESTION, CALL, RESULT, SECOND_CALL, RESULT),
        f"{EARLIER}User: turn on x\n{QUOTED_CALL}\nTool result: {RESULT.content}\n{QUOTED_SECOND_CALL}"
        f"\n\n{RESULT.content}",
    ),
    "large-prompt-new-question-alone": TurnCase(
        ASSIST_PROMPT, holding(QUESTION, CALL, RESULT, REPLY, in_kv=False),
        (QUESTION, CALL, RESULT, REPLY, MORE), "and more",
    ),
    "reuse-over-budget-keeps-the-current-turn": TurnCase(
        SYSTEM, holding(QUESTION, CALL, kv_tokens=4096), (QUESTION, CALL, RESULT),
        f"{EARLIER}User: turn on x\n{QUOTED_CALL}\n\n{RESULT.content}", REUSE,
    ),
    "reuse-another-conversation-sends-the-current-turn": TurnCase(
        ASSIST_PROMPT, holding(HI, REPLY, conversation_id="b"), (QUESTION, CALL, RESULT),
        f"{EARLIER}User: turn on x\n{QUOTED_CALL}\n\n{RESULT.content}", REUSE,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", TURN_CASES.values(), ids=TURN_CASES.keys())
def test_the_current_turn_is_always_sent(case: TurnCase) -> None:
    """Earlier turns go first; the question, the calls and their results stay with the results."""
    request = ChatRequest(case.system, case.messages, tools=TOOLS, conversation_id="a")
    cache = replace(case.cache, system_key=system_key(case.system, render_tools(TOOLS)))
    planned = plan(cache, request, kv_mode=case.mode, max_context_len=4096)
    assert planned.input.text == case.input
    assert planned.input.role is (Role.TOOL if case.messages[-1].role == "tool" else Role.USER)


HIT_CASES = {
    "cold-system-prompt": ("cold", False, False),
    "cold-system-prompt-restored-from-its-file": ("cold", True, True),
    "follow-up": ("follow-up", False, True),
    "conservative-follow-up": ("conservative-follow-up-quotes-the-history", False, True),
    "over-budget": ("over-budget", False, False),
    "naive": ("naive", True, False),
}


@pytest.mark.parametrize(("case", "loaded_prompt_cache", "hit"), HIT_CASES.values(), ids=HIT_CASES.keys())
def test_is_hit(case: str, loaded_prompt_cache: bool, hit: bool) -> None:
    """A hit sends only what the strategy must, the system section warm: kept, or loaded from its file."""
    assert is_hit(planned_for(CASES[case]), loaded_prompt_cache=loaded_prompt_cache) is hit


def planned_for(case: Case) -> Plan:
    request = ChatRequest(SYSTEM, case.messages, tools=TOOLS, conversation_id=case.conversation_id)
    return plan(case.cache, request, kv_mode=case.mode, max_context_len=4096)


PERF = PerfStats(prefill_tokens=20, generate_tokens=5)
# The plan's case, how its run ended, then the cache's (system_in_kv, conversation_id, in_kv, kv_tokens),
# the prompt's tokens and the KV cache's tokens.
SETTLE_CASES = {
    "failed-before-reading-a-new-system-prompt": (
        "cold", {"prefilled": False, "perf": None}, (False, None, False, 0), 0, 0,
    ),
    "failed-after-reading-the-input": ("follow-up", {"perf": None}, (True, None, False, 100), 0, 0),
    "cut-at-a-stop-string": (
        "follow-up", {"perf": None, "chunks": 3, "kv_tokens": 150}, (True, None, False, 100), 147, 150,
    ),
    "kept-and-counted": ("follow-up", {}, (True, "a", True, 125), 120, 125),
    "kept-and-told": ("follow-up", {"kv_tokens": 300}, (True, "a", True, 300), 295, 300),
    "kept-after-a-reset": ("new-conversation", {}, (True, "b", True, 25), 20, 25),
    "not-kept-with-the-system-warm": (
        "conservative-follow-up-quotes-the-history", {"kv_tokens": 40}, (True, "a", False, 65), 60, 40,
    ),
    "not-kept-with-the-system-cold": (
        "conservative-cold", {"system_warm": False, "kv_tokens": 40}, (True, "a", False, 25), 20, 40,
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("case", "end", "cache", "prompt_tokens", "kv_tokens"), SETTLE_CASES.values(), ids=SETTLE_CASES.keys()
)
def test_settle(
    case: str,
    end: dict[str, Any],
    cache: tuple[bool, str | None, bool, int],
    prompt_tokens: int,
    kv_tokens: int,
) -> None:
    planned = planned_for(CASES[case])
    ran = RunEnd(
        **{
            "keep_history": planned.options.keep_history,
            "system_warm": True,
            "prefilled": True,
            "reply": REPLY,
            "chunks": 0,
            "perf": PERF,
            "kv_tokens": None,
            **end,
        }
    )
    settled = settle(CASES[case].cache, planned, ran)
    state = settled.cache
    assert (state.system_in_kv, state.conversation_id, state.in_kv, state.kv_tokens) == cache
    assert (settled.prompt_tokens, settled.kv_tokens) == (prompt_tokens, kv_tokens)
    assert state.system_key == KEY
    if ran.perf is not None:  # the reply joined the conversation: the next turn follows it
        assert state.cached_messages == len(CASES[case].messages) + 1
        assert state.fingerprint == fingerprint([*CASES[case].messages, REPLY])
