"""Typed values of the high-level API: parameters, inputs and results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt


class Role(StrEnum):
    """Who speaks in a PROMPT input (the system prompt is set separately)."""

    USER = "user"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters; a field left at ``None`` keeps the runtime's own value.

    The runtime's values are those of ``rkllm_createDefaultParam()`` (:data:`RUNTIME_SAMPLING`)
    with the model's load-time ``sampling`` applied. On ABI 1.3 they can change per run; on
    ABI 1.2 they are fixed when the model is loaded and a run's ``sampling`` is ignored.
    """

    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    repeat_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None


RUNTIME_SAMPLING = Sampling(
    top_k=40,
    top_p=0.9,
    temperature=0.8,
    repeat_penalty=1.1,
    frequency_penalty=0.0,
    presence_penalty=0.0,
    mirostat=0,
    mirostat_tau=5.0,
    mirostat_eta=0.1,
)
"""The values of the vendor's ``rkllm_createDefaultParam()``: what a field left out gets.

To show and document; the binding never sends them (a field left out is not set at all).
"""


@dataclass(frozen=True, slots=True)
class ModelParams:
    """What ``rkllm_init`` needs beyond the model path.

    The parameters start from the library's own ``rkllm_createDefaultParam()``; a field left
    at ``None`` keeps the runtime's value. What the binding always changes, and why, is in
    :meth:`RKLLMRuntime._build_param`.
    """

    max_context_len: int = 4096  # the runtime's 512 cannot hold an Assist prompt (1,500-3,000 tokens)
    max_new_tokens: int | None = None
    n_keep: int | None = None
    sampling: Sampling | None = None  # load-time sampling: the only one on ABI 1.2
    enabled_cpus_mask: int | None = None
    embed_flash: bool | None = None
    base_domain_id: int | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """A text input, wrapped by the model's chat template for ``role``."""

    text: str
    role: Role = Role.USER
    enable_thinking: bool = False


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token ids fed as they are."""

    ids: Sequence[int]
    role: Role = Role.USER


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Embedding vectors: ``n_tokens`` rows of the model's embedding size, flattened."""

    values: Sequence[float]
    n_tokens: int
    role: Role = Role.USER


Input = Prompt | Tokens | Embeddings


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-run options.

    ``sampling`` and ``max_new_tokens`` override the load-time values on ABI 1.3
    only. ``save_prompt_cache`` writes the prefilled prompt to that file.
    """

    keep_history: bool = False
    max_new_tokens: int = 0
    sampling: Sampling | None = None
    lora_adapter: str | None = None
    save_prompt_cache: str | None = None


@dataclass(frozen=True, slots=True)
class PerfStats:
    """Figures the runtime reports at the end of a run."""

    prefill_time_ms: float = 0.0
    prefill_tokens: int = 0
    generate_time_ms: float = 0.0
    generate_tokens: int = 0
    memory_usage_mb: float = 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Generated tokens per second (0 when nothing was generated)."""
        if self.generate_time_ms <= 0:
            return 0.0
        return self.generate_tokens * 1000.0 / self.generate_time_ms

    @property
    def prefill_tokens_per_second(self) -> float:
        """Prefilled tokens per second (0 when nothing was prefilled)."""
        if self.prefill_time_ms <= 0:
            return 0.0
        return self.prefill_tokens * 1000.0 / self.prefill_time_ms


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """One of the likeliest tokens at a position: its text and natural-log probability."""

    token: str
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A chosen token's text and log-probability, with the likeliest alternatives at its position.

    Probabilities are the model's own (softmax of its logits), before any grammar or sampling.
    """

    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one finished run."""

    text: str
    perf: PerfStats
    logprobs: tuple[TokenLogprob, ...] = ()
    """Per chosen token, when the reply was decoded from logits and they were asked for."""


@dataclass(frozen=True, slots=True, eq=False)
class Logits:
    """The outcome of a logits run: the next-token logits of the input's last position."""

    values: npt.NDArray[np.float32]
    """One float per entry of the model's output layer: its vocabulary, padding included."""
    perf: PerfStats

    @property
    def width(self) -> int:
        """How many logits the runtime returned."""
        return int(self.values.shape[0])
