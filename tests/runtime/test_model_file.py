"""The model file's checks before the runtime is asked to load it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rkllm_runtime.errors import InsufficientMemoryError, ModelNotFoundError, NotAModelError, RKLLMError
from rkllm_runtime.model_file import check_model_file


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda path: path.mkdir(), NotAModelError, "is a folder"),
        (lambda path: None, ModelNotFoundError, "does not exist"),
        (lambda path: path.write_bytes(b""), NotAModelError, "is empty"),
        (lambda path: path.open("wb").truncate(2**40), InsufficientMemoryError, r"needs about \d+ MB"),
    ],
    ids=["folder", "missing", "empty", "larger than the memory"],
)
def test_a_file_that_cannot_load_is_named_before_the_runtime_sees_it(
    tmp_path: Path, make: object, error: type[RKLLMError], message: str
) -> None:
    path = tmp_path / "model.rkllm"
    make(path)  # type: ignore[operator]
    with pytest.raises(error, match=message):
        check_model_file(path)


def test_a_model_that_fits_passes(tmp_path: Path) -> None:
    path = tmp_path / "model.rkllm"
    path.write_bytes(b"weights")
    check_model_file(path)
