"""What each RKLLM runtime release is: its ABI, the functions it exports, and known faults.

Sources: the vendor header ``rkllm.h`` at each release tag of airockchip/rknn-llm, its
CHANGELOG and field reports (see the README's "Runtime releases" section).
"""

from __future__ import annotations

from dataclasses import dataclass

from .abi import v1_2, v1_3
from .abi.interface import ABIModule

# Exported by every release from 1.2.0 on.
CORE_FUNCTIONS = frozenset(
    {
        "rkllm_createDefaultParam",
        "rkllm_init",
        "rkllm_run",
        "rkllm_run_async",
        "rkllm_abort",
        "rkllm_is_running",
        "rkllm_destroy",
        "rkllm_load_lora",
        "rkllm_load_prompt_cache",
        "rkllm_release_prompt_cache",
        "rkllm_clear_kv_cache",
        "rkllm_set_chat_template",
    }
)
# Added in 1.2.1 (with the four-argument rkllm_clear_kv_cache and RKLLMInput.role).
FUNCTIONS_1_2_1 = CORE_FUNCTIONS | {
    "rkllm_get_kv_cache_size",
    "rkllm_set_function_tools",
    "rkllm_set_cross_attn_params",
}
SUPPORTED = ("1.2.1", "1.2.2", "1.2.3", "1.3.1")  # what a refusal recommends


@dataclass(frozen=True, slots=True)
class Release:
    """One runtime release as the binding knows it."""

    version: str
    abi: ABIModule | None  # None: another layout, refused
    functions: frozenset[str]
    refusal: str | None = None  # why it is refused
    warning: str | None = None  # a known fault of the vendor's build

    @property
    def supported(self) -> bool:
        """Whether the binding can drive this release."""
        return self.abi is not None


_OLD_LAYOUT = (
    "it declares rkllm_clear_kv_cache with two arguments and has no RKLLMInput role or "
    "enable_thinking, no rkllm_get_kv_cache_size and no rkllm_set_function_tools"
)
_SVE_CRASH = (
    "the stock librkllmrt.so of runtime 1.3.0 uses SVE instructions and stops with "
    "'Illegal instruction' on RK3588 (rknn-llm issue #518); if loading the model ends the process, "
    "install runtime 1.2.3 or 1.3.1"
)

RELEASES: dict[str, Release] = {
    release.version: release
    for release in (
        Release("1.2.0", None, CORE_FUNCTIONS, refusal=_OLD_LAYOUT),
        Release("1.2.1b1", None, CORE_FUNCTIONS, refusal=_OLD_LAYOUT),
        Release("1.2.1", v1_2, FUNCTIONS_1_2_1),
        Release("1.2.2", v1_2, FUNCTIONS_1_2_1),
        Release("1.2.3", v1_2, FUNCTIONS_1_2_1),
        Release("1.3.0", v1_3, FUNCTIONS_1_2_1, warning=_SVE_CRASH),
        Release("1.3.1", v1_3, FUNCTIONS_1_2_1),
    )
}
