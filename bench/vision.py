"""Snapshot to answer: a camera snapshot and a question through the chat engine, at RK3588 speeds.

For each vision model of Rockchip's multimodal benchmark (rknn-llm 1.3.0 `benchmark.md`, RK3588,
w8a8 language model, FP16 encoder on all NPU cores) an emulated encoder and language model are
set to the vendor's figures: the encoder's time for one image, the prefill of the image turn
(the vendor's prompt length, fitted to the emulator's timing model) and the decode rate. A
1920x1080 JPEG snapshot and "Is there a parcel at the door?" then go through a warm
ChatEngine (its system prompt already cached), and the one-sentence reply is timed:

- preprocess: decoding and fitting the JPEG with Pillow, measured on this machine;
- encode, prefill, decode: the runtimes' own figures (RKNN_QUERY_PERF_RUN and the RKLLM perf
  stats), at RK3588 speed (the emulator waits in real time: a time scale below 1 runs faster,
  but the host's own overhead is then scaled up with the figures);
- memory: the language model's figure from the vendor's table, plus the encoder's as the engine
  reports it (RKNN_QUERY_MEM_SIZE). Rockchip publishes no encoder figure; the one field figure
  (Q-engineering's Qwen3-VL-2B port: 3.1 GB of RAM with both loaded, on a Rock 5C) sets the
  emulated Qwen3-VL-2B encoder's, and the others are left out.

Target: at most 2.5 s from snapshot to answer with a sub-1B vision model.

Usage: uv run python bench/vision.py [--abi 1.3] [--time-scale 1]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from rkllm_runtime import ModelParams, RKLLMRuntime
from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatResult, Message
from rkllm_runtime.emulator import EmulatedEncoder, EmulatedModel, Rule, build_cached
from rkllm_runtime.vision.preprocess import decode, fit

SYSTEM = "You answer questions about camera snapshots in one short sentence."
QUESTION = "Is there a parcel at the door?"
ANSWER = "Yes, a brown parcel is on the doormat in front of the door."
TARGET_MS = 2500.0
DOUBLE_AT = 810.0  # the emulator's default: a token's prefill costs twice as much at this position


@dataclass(frozen=True)
class VisionModel:
    """One row of the vendor's multimodal table, with the shapes of the model."""

    name: str
    family: str
    size: int
    """The encoder's input: size x size pixels."""
    image_tokens: int
    embed_size: int
    encode_ms: float
    prefill_tokens: int
    prefill_ms: float
    decode_tps: float
    memory_mb: float | None
    """The language model's memory in the vendor's main table (None: not listed)."""
    sub_1b: bool
    both_mb: float | None = None
    """Memory with the encoder loaded too, as measured in the field (None: no figure)."""

    @property
    def encoder_mb(self) -> float:
        """The encoder's share, where both figures are known (else 0: not counted)."""
        return self.both_mb - self.memory_mb if self.both_mb and self.memory_mb else 0.0


MODELS = (
    VisionModel("SmolVLM-256M", "smolvlm", 512, 64, 576, 842, 128, 77.3, 78, None, True),
    VisionModel("Qwen3.5-0.8B", "qwen3.5", 448, 196, 1024, 690, 216, 1560, 27, 1039.66, True),
    VisionModel("Qwen3-VL-2B", "qwen3-vl", 448, 196, 2048, 2080, 196, 649, 14.91, 1868.98, False, 3100),
)


def prefill_tps(tokens: int, ms: float) -> float:
    """The emulator's 128-token rate that prefills ``tokens`` from an empty cache in ``ms``.

    Its model: a token's cost grows linearly with its position, doubling at DOUBLE_AT.
    """
    cost = tokens + tokens * tokens / (2 * DOUBLE_AT)
    return 128 * 1000.0 * cost / (ms * (128 + 128 * 128 / (2 * DOUBLE_AT)))


def snapshot() -> bytes:
    """A 1080p camera snapshot: a door with a parcel in front of it."""
    image = Image.new("RGB", (1920, 1080), (150, 150, 145))
    image.paste((90, 60, 40), (760, 100, 1160, 1000))  # the door
    image.paste((170, 120, 70), (880, 820, 1040, 960))  # the parcel
    data = io.BytesIO()
    image.save(data, "JPEG", quality=85)
    return data.getvalue()


@dataclass(frozen=True)
class Figures:
    """One model's snapshot-to-answer figures, in milliseconds."""

    preprocess: float
    result: ChatResult

    @property
    def total(self) -> float:
        perf = self.result.perf
        return self.preprocess + self.result.image_encode_ms + perf.prefill_time_ms + perf.generate_time_ms


def measure_preprocess(data: bytes, size: int) -> float:
    """Median time of decoding and fitting the snapshot (as the engine does before encoding)."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fit(decode(data, (size, size)), size, size, (127, 127, 127))
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[2]


async def run_model(spec: VisionModel, library: Path, workdir: Path, data: bytes) -> Figures:
    model = EmulatedModel(
        rules=[Rule(reply=ANSWER)],
        name=spec.name,
        prefill_tps=prefill_tps(spec.prefill_tokens, spec.prefill_ms),
        decode_tps=spec.decode_tps,
        embed_size=spec.embed_size,
        image_tokens=spec.image_tokens,
    ).write(workdir / f"{spec.name}.rkllm")
    encoder = EmulatedEncoder(
        family=spec.family,
        height=spec.size,
        width=spec.size,
        tokens=spec.image_tokens,
        embed_size=spec.embed_size,
        encode_ms=spec.encode_ms,
        memory_mb=spec.encoder_mb,
    ).write(workdir / f"{spec.name}_vision_rk3588.rknn")
    runtime = RKLLMRuntime.open(library, model, ModelParams(max_context_len=4096))
    engine = ChatEngine(runtime, encoder_path=encoder)
    try:
        warm = ChatRequest(SYSTEM, [Message("user", "Hello")])
        async with engine.chat(warm) as stream:
            async for _event in stream:
                pass
        request = ChatRequest(SYSTEM, [Message("user", QUESTION, images=(data,))], max_new_tokens=64)
        async with engine.chat(request) as stream:
            async for _event in stream:
                pass
        assert stream.result is not None
        return Figures(measure_preprocess(data, spec.size), stream.result)
    finally:
        await engine.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--abi", default="1.3", choices=("1.2", "1.3"))
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="below 1: faster, the figures less exact"
    )
    args = parser.parse_args()
    os.environ["RKLLM_EMU_TIME_SCALE"] = str(args.time_scale)
    library = build_cached(args.abi)
    data = snapshot()
    print(f"A {len(data) // 1024} KB 1920x1080 JPEG, {QUESTION!r}, reply {ANSWER!r}; RK3588 figures\n")
    print("| model | preprocess | encode | prefill (tokens) | decode (tokens) | to answer | memory |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in MODELS:
            figures = await run_model(spec, library, Path(tmp), data)
            perf = figures.result.perf
            memory = f"{spec.memory_mb:.0f} MB" if spec.memory_mb else "not published"
            if figures.result.encoder_memory_mb:
                memory += f" + {figures.result.encoder_memory_mb:.0f} MB"
            verdict = "" if not spec.sub_1b else (" ✓" if figures.total <= TARGET_MS else " ✗ over 2.5 s")
            print(
                f"| {spec.name} | {figures.preprocess:.0f} ms | {figures.result.image_encode_ms:.0f} ms "
                f"| {perf.prefill_time_ms:.0f} ms ({perf.prefill_tokens}) "
                f"| {perf.generate_time_ms:.0f} ms ({perf.generate_tokens}) "
                f"| {figures.total:.0f} ms{verdict} | {memory} |"
            )


if __name__ == "__main__":
    asyncio.run(main())
