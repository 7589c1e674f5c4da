"""An RKLLM-compatible runtime in C for machines without a Rockchip NPU (see README.md here)."""

from .build import build, build_cached
from .encoder_model import EmulatedEncoder
from .model import EmulatedModel, Rule

__all__ = ["EmulatedEncoder", "EmulatedModel", "Rule", "build", "build_cached"]
