"""Model families: told from an encoder's custom string or file name, with their image tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from rkllm_runtime.vision import encoder_family, family_named, tags_for


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("qwen2-vl-vision_rk3588.rknn", "qwen2-vl"),
        ("qwen2_5-vl-3b_vision_rk3588.rknn", "qwen2.5-vl"),
        ("Qwen3-VL-2B-Instruct_vision_rk3588.rknn", "qwen3-vl"),
        ("qwen3.5-0.8b_vision_rk3588.rknn", "qwen3.5"),
        ("minicpm-v-2_6_vision_rk3588.rknn", "minicpm-v"),
        ("internvl3-1b_vision_rk3588.rknn", "internvl3"),
        ("smolvlm_vision_rk3588.rknn", "smolvlm"),
        ("deepseekocr_vision_rk3588.rknn", "deepseekocr"),
    ],
)
def test_the_vendor_file_names_tell_the_family(name: str, family: str) -> None:
    found = family_named(name)
    assert found is not None
    assert found.name == family


def test_the_custom_string_comes_first(caplog: pytest.LogCaptureFixture) -> None:
    assert encoder_family("internvl3", "qwen3-vl_vision.rknn").tags.content == "<IMG_CONTEXT>"
    assert encoder_family("", "encoder.rknn").name == "qwen2-vl"  # the vendor demo's default tags
    assert "Cannot tell the model family of encoder.rknn" in caplog.text


def test_a_model_is_loaded_with_its_encoders_tags() -> None:
    smolvlm = tags_for(Path("/models/smolvlm_vision_rk3588.rknn"))
    assert smolvlm is not None
    assert smolvlm.start.startswith("<fake_token_around_image>")
    assert tags_for(None) is None
