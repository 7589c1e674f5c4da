"""The grammar benchmark's harness, on the scripted emulator: each request checked, then decoded."""

from __future__ import annotations

from pathlib import Path

from constrained_real import ANY_OBJECT, Request, measure, summarise

from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from rkllm_runtime.emulator.tokenizer_json import tokenizer_json
from tests.conftest import call

SWITCH = {"type": "object", "properties": {"state": {"enum": ["on", "off"]}}, "required": ["state"]}
REQUESTS = [
    Request("format", "switch the kettle", SWITCH),
    Request("json", "the kitchen as JSON", ANY_OBJECT),
    Request("tool", "turn on the porch light", names=("HassTurnOn",)),
    Request("tool", "turn on the coffee machine", names=("HassTurnOn",)),
]
RULES = [
    Rule(role="user", match="not valid", reply='{"state": "on"}'),  # the retry of JSON, told why
    Rule(role="user", match="did not call", reply="It is on now."),  # the retry of a call, still prose
    Rule(role="user", match="switch the kettle", reply='Sure! {"state": "maybe"}'),
    Rule(role="user", match="the kitchen", reply='Here you are: {"kitchen": "on"}'),
    Rule(role="user", match="porch light", reply=call("HassTurnOn", name="Porch light")),
    # a call written without its markup: no call, unless decoded as one
    Rule(
        role="user",
        match="coffee machine",
        reply='I will: {"name": "HassTurnOn", "arguments": {"name": "Coffee"}}',
    ),
]


async def test_each_request_is_counted_checked_and_decoded(tmp_path: Path) -> None:
    model = EmulatedModel(rules=RULES, name="grammar-harness").write(tmp_path / "model.rkllm")
    library = build_cached("1.3")
    checked = await measure(library, model, None, REQUESTS, tmp_path)
    decoded = await measure(library, model, tokenizer_json(), REQUESTS, tmp_path)

    assert [(o.valid, len(o.attempts)) for o in checked] == [(True, 2), (True, 2), (True, 1), (False, 2)]
    assert (
        checked[2].reply == '<tool_call>{"name":"HassTurnOn","arguments":{"name":"Porch light"}}</tool_call>'
    )
    assert [(o.valid, len(o.attempts)) for o in decoded] == [(True, 1)] * 4
    assert all(a.constrained for o in decoded for a in o.attempts)
    assert not any(a.constrained for o in checked for a in o.attempts)
    counts = ("requests", "first", "retried", "failed")
    assert {kind: [s[c] for c in counts] for kind, s in summarise(checked).items()} == {
        "format": [1, 0, 1, 0],
        "json": [1, 0, 1, 0],
        "tool": [2, 1, 0, 1],
    }
    assert {kind: [s[c] for c in counts] for kind, s in summarise(decoded).items()} == {
        "format": [1, 1, 0, 0],
        "json": [1, 1, 0, 0],
        "tool": [2, 2, 0, 0],
    }
