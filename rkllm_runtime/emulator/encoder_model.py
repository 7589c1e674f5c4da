"""Writing the emulated RKNN runtime's vision encoder files (format in README.md beside this file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAGIC = "rknn-emulator-model 1"


@dataclass(slots=True)
class EmulatedEncoder:
    """An emulated ``.rknn`` vision encoder: its input, its output and its speed on the NPU."""

    family: str = "qwen3-vl"
    """Returned as the model's custom string (``RKNN_QUERY_CUSTOM_STRING``)."""
    height: int = 448
    width: int = 448
    tokens: int = 196
    """Image tokens of its output."""
    embed_size: int = 64
    """Floats per image token: the language model's embedding size."""
    target_platform: str = "RK3588"
    encode_ms: float = 0.0
    """Run time of one image on the NPU (0: no delay)."""
    memory_mb: float = 0.0
    input_format: str = "NHWC"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)

    def text(self) -> str:
        """The encoder file's content."""
        lines = [
            MAGIC,
            f"family {self.family}",
            f"input {self.height} {self.width} 3",
            f"input_format {self.input_format}",
            f"tokens {self.tokens}",
            f"embed_size {self.embed_size}",
            f"target_platform {self.target_platform}",
            f"encode_ms {self.encode_ms}",
            f"memory_mb {self.memory_mb}",
            "mean {} {} {}".format(*self.mean),
            "std {} {} {}".format(*self.std),
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the encoder file and return its path."""
        path = Path(path)
        path.write_text(self.text(), encoding="utf-8")
        return path
