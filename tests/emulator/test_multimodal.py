"""The scripted engine's multimodal inputs: image rows checked as the model reads them, replies per image."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rkllm_runtime import ModelParams, RKLLMRuntime, RunError
from rkllm_runtime.emulator import Rule
from rkllm_runtime.types import ImageEmbedding, MultiModal, Prompt
from rkllm_runtime.vision import FAMILIES
from rkllm_runtime.vision.encoder import VisionEncoder
from tests.conftest import ModelFactory
from tests.images import BLUE, RED, rknn_library, write_encoder

QWEN = FAMILIES["qwen3-vl"].tags
RULES = (
    Rule(image="red", reply="A red car is in the driveway."),
    Rule(image="blue", reply="I see something {image}."),
    Rule(reply="No picture."),
)


Encode = Callable[[bytes], ImageEmbedding]


@pytest.fixture
def encode(tmp_path: Path) -> Iterator[Encode]:
    encoder = VisionEncoder.open(rknn_library(), write_encoder(tmp_path, tokens=16, embed_size=64))
    yield encoder.encode
    encoder.close()


def runtime(library: Path, model: Path) -> RKLLMRuntime:
    return RKLLMRuntime.open(library, model, ModelParams(max_context_len=1024, image_tags=QWEN))


def ask(rt: RKLLMRuntime, text: str, *images: ImageEmbedding) -> str:
    return rt.run(MultiModal(text, images, QWEN)).text


def test_the_reply_follows_the_image(
    emulator_library: Path, make_model: ModelFactory, encode: Encode
) -> None:
    with runtime(emulator_library, make_model(*RULES, image_tokens=16)) as rt:
        assert ask(rt, "<image>Is there a car?", encode(RED)) == "A red car is in the driveway."
        assert ask(rt, "<image>What is this?", encode(BLUE)) == "I see something blue."


def test_each_image_token_is_prefilled(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> None:
    library = rknn_library()
    with (
        runtime(emulator_library, make_model(*RULES)) as rt,
        VisionEncoder.open(library, write_encoder(tmp_path, name="a.rknn", tokens=16)) as small,
        VisionEncoder.open(library, write_encoder(tmp_path, name="b.rknn", tokens=25)) as large,
    ):
        prefilled = [
            rt.run(MultiModal("<image>Hi", [e.encode(RED)], QWEN)).perf.prefill_tokens for e in (small, large)
        ]
        assert prefilled[1] - prefilled[0] == 25 - 16


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"image_tokens": 196}, "<image>Hi"),  # an encoder for another model: its token count
        ({"embed_size": 128}, "<image>Hi"),  # ... or its embedding size
        ({}, "Hi, no placeholder"),
        ({}, "<image><image>Two placeholders"),
    ],
    ids=["token-count", "embed-size", "no-placeholder", "extra-placeholder"],
)
def test_an_input_the_model_cannot_read_fails_the_run(
    emulator_library: Path,
    make_model: ModelFactory,
    encode: Encode,
    *,
    fields: dict[str, int],
    text: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with runtime(emulator_library, make_model(*RULES, **fields)) as rt:
        with pytest.raises(RunError):
            ask(rt, text, encode(RED))
        assert "E rkllm:" in capfd.readouterr().err
        assert rt.run(Prompt("Still there?")).text == "No picture."  # the handle answers on
