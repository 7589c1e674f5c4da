"""A model file's header, as the runtime logs it at load, and whether it suits this board and runtime.

The vendor runtime prints, after its version line, ``I rkllm: rkllm-toolkit version: 1.2.3,
max_context_limit: 4096, npu_core_num: 3, target_platform: RK3588, model_dtype: W8A8``
(rknn-llm #483, rkllama #104). The toolkit release is nowhere else in the file in a documented
form, and a file of another release series is refused or crashes the runtime (rknn-llm #509).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rkllm_runtime.errors import ModelIncompatibleError

_HEADER = re.compile(
    r"rkllm-toolkit version: (?P<toolkit>[\w.]+)"
    r"(?:, max_context_limit: (?P<context>\d+))?"
    r"(?:, npu_core_num: (?P<cores>\d+))?"
    r"(?:, target_platform: (?P<platform>\w+))?"
    r"(?:, model_dtype: (?P<dtype>\w+))?"
)


@dataclass(frozen=True, slots=True)
class ModelHeader:
    """What a model file says about itself."""

    toolkit: str
    """The rkllm-toolkit release it was converted with."""
    max_context_limit: int | None = None
    npu_core_num: int | None = None
    target_platform: str | None = None
    model_dtype: str | None = None


def parse_header(lines: Iterable[str]) -> ModelHeader | None:
    """The header among the runtime's log lines, or None when it printed none."""
    for line in lines:
        match = _HEADER.search(line)
        if match is None:
            continue
        context, cores = match.group("context"), match.group("cores")
        return ModelHeader(
            toolkit=match.group("toolkit"),
            max_context_limit=int(context) if context else None,
            npu_core_num=int(cores) if cores else None,
            target_platform=(match.group("platform") or "").upper() or None,
            model_dtype=match.group("dtype"),
        )
    return None


def series(release: str) -> str:
    """A release's series, ``1.2`` for ``1.2.3`` or ``1.2.1b1``: files and runtimes must share it."""
    return ".".join(re.findall(r"\d+", release)[:2])


def check_header(
    header: ModelHeader, *, chip: str | None, release: str | None, context: int | None = None
) -> None:
    """Raise :class:`ModelIncompatibleError` naming what the file needs, if it is not this board's.

    ``context``: the context it is loaded with, which cannot exceed the one it was converted for.
    """
    if chip is not None and header.target_platform is not None and header.target_platform != chip:
        raise ModelIncompatibleError(
            f"the model was converted for an {header.target_platform}, and this board is an {chip}: "
            f"download the {chip} file of this model",
            needs=header.target_platform,
        )
    if release is not None and series(header.toolkit) != series(release):
        needs = f"runtime {series(header.toolkit)}.x"
        raise ModelIncompatibleError(
            f"the model was converted with rkllm-toolkit {header.toolkit} and needs {needs}; "
            f"this runtime is {release}: install runtime {series(header.toolkit)}.x or download a file "
            f"converted for {series(release)}.x",
            needs=needs,
        )
    limit = header.max_context_limit
    if context is not None and limit is not None and context > limit:
        raise ModelIncompatibleError(
            f"the model was converted for a context of at most {limit} tokens: set the context length "
            f"to {limit} or less, or use a file converted for a larger context",
            needs=f"a context of at most {limit} tokens",
        )
