"""The accuracy benchmark's harness and judge, on the scripted emulator through a real Home Assistant."""

from __future__ import annotations

from pathlib import Path

from accuracy import Settings, run_target, summarise
from accuracy_cases import CASES

from custom_components.rkllm.const import DEFAULT_MAX_CONTEXT_LEN, DEFAULT_MAX_NEW_TOKENS, MODE_IN_PROCESS
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from tests.conftest import call

RULES = [
    Rule(role="user", match="turn on the porch light", reply=call("intent__HassTurnOn", name="Porch light")),
    # the wrong intent: the light stays on
    Rule(
        role="user",
        match="switch off the hallway light",
        reply=call("intent__HassTurnOn", name="Hallway light"),
    ),
    # the call written as prose: nothing runs
    Rule(
        role="user",
        match="turn on the coffee machine",
        reply='To turn it on, use intent__HassTurnOn with {"name": "Coffee machine"}.',
    ),
    Rule(role="user", match="unlock the front door", reply=call("intent__HassTurnOff", name="Front door")),
    Rule(
        role="user", match="add milk", reply=call("todo__HassListAddItem", item="milk", name="Shopping list")
    ),
    Rule(role="user", match="timer for 5 minutes", reply=call("intent__HassStartTimer", minutes=5)),
    Rule(role="user", match="temperature outside", reply="It is 12 degrees outside."),
    Rule(role="user", match="is the front door locked", reply="Yes, it is unlocked."),
    Rule(role="tool", reply="Done."),
]
VERDICTS = {
    "Turn on the porch light": (True, ""),
    "Switch off the hallway light": (False, "light.hallway_light state is 'on', not 'off'"),
    "Turn on the coffee machine": (False, "switch.coffee_machine state is 'off', not 'on'"),
    "Unlock the front door": (True, ""),
    "Add milk to my shopping list": (True, ""),
    "Set a timer for 5 minutes": (True, ""),
    "What's the temperature outside?": (True, ""),
    "Is the front door locked?": (False, "the reply says otherwise"),
}


async def test_each_request_is_judged_by_what_it_left(tmp_path: Path) -> None:
    model = EmulatedModel(rules=RULES, name="accuracy-harness").write(tmp_path / "model.rkllm")
    cases = [case for case in CASES if case.text in VERDICTS]
    settings = Settings(DEFAULT_MAX_CONTEXT_LEN, DEFAULT_MAX_NEW_TOKENS, {}, MODE_IN_PROCESS)
    outcomes = await run_target("rkllm", cases, settings, build_cached("1.3"), model, tmp_path)

    assert {o.text: (o.passed, o.why) for o in outcomes} == VERDICTS
    by_text = {o.text: o for o in outcomes}
    assert (
        by_text["Turn on the porch light"].transcript[0] == 'call: intent__HassTurnOn {"name": "Porch light"}'
    )
    assert by_text["Turn on the porch light"].starts_with_call
    assert not by_text["Turn on the coffee machine"].starts_with_call
    assert by_text["Turn on the coffee machine"].transcript == [
        'said: To turn it on, use intent__HassTurnOn with {"name": "Coffee machine"}.'
    ]
    assert all(o.runs for o in outcomes)
    summary = summarise(outcomes)
    assert summary["passed"] == 5
    assert summary["calls_first"] == [5, 6]
    assert summary["categories"]["on/off by name"] == [1, 3]
