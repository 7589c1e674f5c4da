"""The emulator's scripted engine seen through the raw ctypes layer, as any RKLLM client sees it."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rkllm_runtime import Prompt, RKLLMRuntime, load_library
from rkllm_runtime.abi.common import LLMCallState, LLMHandle, LLMResultCallback, RKLLMInputType
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory


class RawClient:
    """A minimal client written against the raw mirror only."""

    def __init__(self, library_path: Path, model: Path, on_result: object) -> None:
        self.library = load_library(library_path)
        self.lib = self.library.cdll
        abi = self.library.abi
        param = self.lib.rkllm_createDefaultParam()
        self.model_path = str(model).encode()
        param.model_path = self.model_path
        self.callback = LLMResultCallback(on_result)
        self.init_arg = abi.init_callback(self.callback)  # a pointer to RKLLMCallback on 1.3
        self.handle = LLMHandle()
        assert self.lib.rkllm_init(ctypes.byref(self.handle), ctypes.byref(param), self.init_arg) == 0
        self.abi = abi

    def run(self, prompt: str) -> int:
        c_input = self.abi.RKLLMInput()
        c_input.role = b"user"
        c_input.input_type = RKLLMInputType.RKLLM_INPUT_PROMPT
        text = prompt.encode()
        c_input.prompt_input = text
        infer = self.abi.RKLLMInferParam()
        return int(self.lib.rkllm_run(self.handle, ctypes.byref(c_input), ctypes.byref(infer), None))

    def close(self) -> None:
        assert self.lib.rkllm_destroy(self.handle) == 0


def test_default_param_values_are_the_vendors(emulator_library: Path) -> None:
    param = load_library(emulator_library).cdll.rkllm_createDefaultParam()
    assert param.max_context_len == 512
    assert param.top_k == 40
    assert (round(param.top_p, 3), round(param.temperature, 3), round(param.repeat_penalty, 3)) == (
        0.9,
        0.8,
        1.1,
    )
    assert param.extend_param.n_batch == 1
    assert param.extend_param.enabled_cpus_mask == 0xF0


def test_waiting_states_carry_partial_utf8(emulator_library: Path, make_model: ModelFactory) -> None:
    events: list[tuple[int, bytes | None]] = []

    def on_result(result: object, _userdata: object, state: int) -> int:
        text = result.contents.text  # type: ignore[attr-defined]
        events.append((state, ctypes.string_at(text) if text else None))
        return 0

    # one character, two tokens
    client = RawClient(emulator_library, make_model(Rule(reply="🦜")), on_result)
    assert client.run("hi") == 0
    client.close()
    states = [state for state, _ in events]
    assert LLMCallState.RKLLM_RUN_WAITING in states
    assert states[-1] == LLMCallState.RKLLM_RUN_FINISH
    assert events[-1][1] is None  # FINISH carries no text
    assert b"".join(text for _, text in events if text) == "🦜".encode()


def test_callback_return_1_pauses_and_next_run_resumes(
    emulator_library: Path, make_model: ModelFactory
) -> None:
    texts: list[bytes] = []

    def on_result(result: object, _userdata: object, state: int) -> int:
        if state == LLMCallState.RKLLM_RUN_NORMAL:
            texts.append(ctypes.string_at(result.contents.text))  # type: ignore[attr-defined]
            return 1 if len(texts) == 2 else 0
        return 0

    client = RawClient(emulator_library, make_model(Rule(reply="a b c d")), on_result)
    assert client.run("hi") == 0
    assert texts == [b"a", b" b"]
    assert client.run("ignored while paused") == 0
    client.close()
    assert b"".join(texts) == b"a b c d"


def test_second_concurrent_run_fails_cleanly(
    emulator_library: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "100")
    started = threading.Event()

    def on_result(_result: object, _userdata: object, _state: int) -> int:
        started.set()
        return 0

    client = RawClient(emulator_library, make_model(Rule(reply="x " * 50)), on_result)
    worker = threading.Thread(target=client.run, args=("hi",))
    worker.start()
    assert started.wait(10)
    assert client.lib.rkllm_is_running(client.handle) == 1
    assert client.run("second") == -1
    assert client.lib.rkllm_clear_kv_cache(client.handle, 1, None, None) == -1
    assert client.lib.rkllm_abort(client.handle) == 0
    worker.join(10)
    assert client.lib.rkllm_is_running(client.handle) == 0
    client.close()


def test_log_level(
    emulator_library: Path, make_model: ModelFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    client = RawClient(emulator_library, make_model(Rule(reply="ok")), lambda *_: 0)
    capfd.readouterr()
    client.run("quiet")
    assert "prefill" not in capfd.readouterr().err
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RKLLM_LOG_LEVEL", "2")
        client.run("verbose")
    err = capfd.readouterr().err
    client.close()
    assert "I rkllm: prefill 10 tokens" in err  # the turn template and "verbose"
    assert "kv cache size" in err


def test_init_logs_the_version(
    emulator_library: Path, make_model: ModelFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    RawClient(emulator_library, make_model(), lambda *_: 0).close()
    assert "rkllm-runtime version: 1." in capfd.readouterr().err


def test_crash_fault_kills_the_process(emulator_library: Path, make_model: ModelFactory) -> None:
    """The hard-crash fault really crashes (what a worker process must survive)."""
    model = make_model(Rule(match="crash", crash=True))
    code = (
        "from rkllm_runtime import RKLLMRuntime, Prompt\n"
        f"RKLLMRuntime.open({str(emulator_library)!r}, {str(model)!r}).run(Prompt('crash'))\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert process.returncode == -11  # SIGSEGV


@pytest.mark.parametrize(
    ("prefill_tps", "tokens", "expected_ms"),
    [
        (128 / 0.378, 128, 378.0),  # Qwen2.5-1.5B on RK3588: the vendor's table
        (128 / 0.199, 128, 199.0),  # Qwen3-0.6B: the vendor's table
        (128 / 0.199, 4000, 20000.0),  # Qwen3-0.6B at 4,000 tokens: about 20 s (rknn-llm #372)
    ],
)
def test_prefill_timing_model_is_calibrated(
    emulator_library: Path, make_model: ModelFactory, prefill_tps: float, tokens: int, expected_ms: float
) -> None:
    """The prefill rate falls with the prompt's length; the model is checked, not the clock."""
    client = RawClient(emulator_library, make_model(prefill_tps=prefill_tps), lambda *_: 0)
    prefill_ms = client.lib.rkllm_emu_prefill_ms
    prefill_ms.argtypes, prefill_ms.restype = [LLMHandle, ctypes.c_int, ctypes.c_int], ctypes.c_double
    modelled = prefill_ms(client.handle, 0, tokens)
    assert modelled == pytest.approx(expected_ms, rel=0.01)
    # The same tokens cost more behind a long cached prefix (attention over more positions).
    assert prefill_ms(client.handle, 2000, tokens) > modelled
    assert prefill_ms(client.handle, 0, 2 * tokens) > 2 * modelled
    client.close()


def test_the_tokenizer_is_qwens(emulator_library: Path, make_model: ModelFactory) -> None:
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply="ok"))) as runtime:
        result = runtime.run(Prompt("turn on the kitchen light"))
    # \n <|im_start|> user \n | turn ␣on ␣the ␣kitchen ␣light | <|im_end|> \n <|im_start|> assistant \n
    assert result.perf.prefill_tokens == 4 + 5 + 5
