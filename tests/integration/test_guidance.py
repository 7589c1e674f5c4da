"""The rules and worked examples a small model is given with the tools it is offered."""

from __future__ import annotations

import json

from custom_components.rkllm.guidance import EXAMPLES, LIVE_CONTEXT_RULE, ON_OFF_RULE, RULES, tool_guidance


def test_no_tools_no_guidance() -> None:
    assert tool_guidance(set()) == ""


def test_examples_only_for_the_offered_tools() -> None:
    guidance = tool_guidance({"HassTurnOn", "HassTurnOff", "GetLiveContext"})
    assert guidance.startswith(RULES)
    assert ON_OFF_RULE in guidance
    assert LIVE_CONTEXT_RULE in guidance
    calls = [json.loads(line) for line in guidance.splitlines() if line.startswith("{")]
    assert [call["name"] for call in calls] == ["HassTurnOff", "HassTurnOn", "HassTurnOn", "HassTurnOff"]
    assert "HassSetVolume" not in guidance


def test_other_tools_get_the_rules_alone() -> None:
    guidance = tool_guidance({"my_script"})
    assert guidance == RULES


def test_every_example_is_a_call_in_the_models_template() -> None:
    guidance = tool_guidance({name for name, _said, _arguments in EXAMPLES})
    blocks = guidance.split("<tool_call>\n")[1:]
    assert len(blocks) == len(EXAMPLES)
    for block, (name, _said, arguments) in zip(blocks, EXAMPLES, strict=True):
        assert json.loads(block.split("\n</tool_call>")[0]) == {"name": name, "arguments": arguments}
