"""Image turns: read by the vision encoder, run with keep_history=0, refused with typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rkllm_runtime import ContextOverflowError, ModelParams, RKLLMRuntime
from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatResult, KVMode, Message, TextDelta
from rkllm_runtime.emulator import EmulatedModel, Rule
from rkllm_runtime.errors import (
    EncoderMismatchError,
    InvalidImageError,
    NoEncoderError,
    TooManyImagesError,
)
from tests.conftest import ModelFactory
from tests.images import BLUE, RED, write_encoder

SYSTEM = "You describe camera snapshots for Home Assistant. " * 40
RULES = (
    Rule(image="red", reply="A red car is in the driveway."),
    Rule(image="blue", reply="The door is {image}."),
    Rule(reply="Hello."),
)
EngineFactory = Callable[..., ChatEngine]


@pytest.fixture(autouse=True)
def rk3588_figures_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKLLM_EMU_TIME_SCALE", "0")  # the runtimes report RK3588 times without sleeping


@pytest.fixture
async def make_engine(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> AsyncIterator[EngineFactory]:
    engines: list[ChatEngine] = []

    def factory(
        model: Path | None = None, encoder: Path | None = None, max_context_len: int = 4096, **kwargs: object
    ) -> ChatEngine:
        model = model or make_model(*RULES, image_tokens=16)
        runtime = RKLLMRuntime.open(emulator_library, model, ModelParams(max_context_len=max_context_len))
        engine = ChatEngine(runtime, encoder_path=encoder, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.aclose()


async def ask(engine: ChatEngine, conversation: list[Message], text: str, *images: bytes) -> ChatResult:
    conversation.append(Message("user", text, images=images))
    request = ChatRequest(SYSTEM, list(conversation), conversation_id="c")
    async with engine.chat(request) as stream:
        said = "".join([event.text async for event in stream if isinstance(event, TextDelta)])
    assert stream.result is not None
    assert stream.result.text == said
    conversation.append(Message("assistant", said))
    return stream.result


async def test_a_snapshot_is_answered(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(encoder=write_encoder(tmp_path, encode_ms=690, memory_mb=800))
    red = await ask(engine, [], "Is there a car?", RED)
    assert red.text == "A red car is in the driveway."
    assert red.image_encode_ms == 690
    assert red.encoder_memory_mb == pytest.approx(800, abs=0.01)
    assert (await ask(engine, [], "Is the door open?", BLUE)).text == "The door is blue."
    text = await ask(engine, [], "Hi")
    assert text.text == "Hello."
    assert text.encoder_memory_mb == pytest.approx(800, abs=0.01)  # it stays loaded beside the model


async def test_an_image_turn_keeps_no_history_and_the_system_prefix(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    engine = make_engine(encoder=write_encoder(tmp_path), kv_mode=KVMode.REUSE)
    conversation: list[Message] = []
    first = await ask(engine, conversation, "Hi")
    assert engine.kv_cache.in_kv  # a text turn is kept (keep_history=1)
    image = await ask(engine, conversation, "And now?", RED)
    assert image.text == "A red car is in the driveway."
    assert not engine.kv_cache.in_kv  # the image turn ran with keep_history=0, as the vendor demo does
    assert engine.kv_cache.system_in_kv
    system_tokens = first.prompt_tokens - 10
    assert image.cached_tokens >= system_tokens  # the cached system section served the image turn
    after = await ask(engine, conversation, "Thanks")
    assert after.text == "Hello."
    assert after.cached_tokens >= system_tokens


async def test_a_model_without_an_encoder_refuses_images(make_engine: EngineFactory) -> None:
    engine = make_engine()
    with pytest.raises(NoEncoderError, match="no vision encoder"):
        await ask(engine, [], "What is this?", RED)
    assert (await ask(engine, [], "Hi")).text == "Hello."
    assert engine.stats.requests == 1


async def test_one_image_per_request(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(encoder=write_encoder(tmp_path))
    with pytest.raises(TooManyImagesError, match="2 images in one request; a qwen3-vl model reads 1"):
        await ask(engine, [], "Compare", RED, BLUE)
    assert (await ask(engine, [], "Only this one", BLUE)).text == "The door is blue."


async def test_what_is_no_image_is_refused_and_the_engine_answers_on(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    engine = make_engine(encoder=write_encoder(tmp_path))
    with pytest.raises(InvalidImageError):
        await ask(engine, [], "What is this?", b"%PDF-1.7")
    assert engine.stats.last_error is not None
    assert (await ask(engine, [], "And this?", RED)).text == "A red car is in the driveway."
    assert (await ask(engine, [], "Hi")).text == "Hello."


async def test_an_encoder_for_another_chip_is_refused(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(encoder=write_encoder(tmp_path, target_platform="RK3576"))
    with pytest.raises(EncoderMismatchError, match="another chip"):
        await ask(engine, [], "What is this?", RED)
    assert (await ask(engine, [], "Hi")).text == "Hello."


async def test_an_encoder_for_another_model_is_refused(make_engine: EngineFactory, tmp_path: Path) -> None:
    model = EmulatedModel(rules=list(RULES)).write(tmp_path / "SmolVLM-256M-Instruct_rk3588.rkllm")
    engine = make_engine(model=model, encoder=write_encoder(tmp_path, family="qwen3-vl"))
    with pytest.raises(EncoderMismatchError, match="for qwen3-vl models, not for SmolVLM"):
        await ask(engine, [], "What is this?", RED)


@pytest.mark.parametrize(("tokens", "ran"), [(1100, False), (900, True)], ids=["certain", "at-run"])
async def test_image_tokens_count_against_the_context(
    make_engine: EngineFactory,
    make_model: ModelFactory,
    tmp_path: Path,
    *,
    tokens: int,
    ran: bool,
    capfd: pytest.CaptureFixture[str],
) -> None:
    model = make_model(*RULES, image_tokens=tokens)
    engine = make_engine(model=model, encoder=write_encoder(tmp_path, tokens=tokens), max_context_len=1024)
    with pytest.raises(ContextOverflowError) as caught:
        await ask(engine, [], "What is this?", RED)
    assert caught.value.tokens > 1024
    assert caught.value.limit == 1024
    # More image tokens than the context holds are refused before running; a near miss when the runtime fails.
    assert ("does not fit in max_context_len" in capfd.readouterr().err) is ran
    assert (await ask(engine, [], "Hi")).text == "Hello."


async def test_a_typed_placeholder_is_no_image(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(encoder=write_encoder(tmp_path))
    assert (await ask(engine, [], "What is <image> here?", RED)).text == "A red car is in the driveway."
