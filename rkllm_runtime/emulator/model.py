"""Writing emulator model files (the format is described in README.md beside this file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAGIC = "rkllm-emulator-model 1"


def escape(text: str | bytes) -> str:
    """Escape a value for one line of a model file; ``bytes`` may hold invalid UTF-8."""
    if isinstance(text, bytes):
        return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in text)
    return "".join(
        "\\\\" if ch == "\\" else "\\n" if ch == "\n" else f"\\x{ord(ch):02x}" if ord(ch) < 0x20 else ch
        for ch in text
    )


@dataclass(slots=True)
class Rule:
    """A scripted reply, chosen when the latest input matches.

    ``match`` is a case-insensitive substring of the input text (empty: any).
    ``tools``: True only when function tools are set, False only without, None either.
    ``reply`` may contain ``{input}`` (the input text) and invalid UTF-8 as bytes.
    """

    reply: str | bytes = ""
    match: str = ""
    role: str | None = None
    tools: bool | None = None
    think: str | None = None
    error_after: int | None = None
    run_fail: bool = False
    crash: bool = False

    def lines(self) -> list[str]:
        """The rule's block in the model file."""
        out = ["rule"]
        if self.role:
            out.append(f"role {self.role}")
        if self.match:
            out.append(f"match {escape(self.match)}")
        if self.tools is not None:
            out.append(f"tools {int(self.tools)}")
        if self.think is not None:
            out.append(f"think {escape(self.think)}")
        out.append(f"reply {escape(self.reply)}")
        if self.error_after is not None:
            out.append(f"error_after {self.error_after}")
        if self.run_fail:
            out.append("run_fail 1")
        if self.crash:
            out.append("crash 1")
        out.append("end")
        return out


@dataclass(slots=True)
class EmulatedModel:
    """An emulator "model": limits, speeds, faults and scripted replies."""

    rules: list[Rule] = field(default_factory=list)
    name: str = "emulated-qwen"
    max_context: int = 4096
    prefill_tps: float = 0.0  # tokens/s of a 128-token prompt (0: no delay)
    prefill_double_at: float = 810.0  # context position where a token's prefill costs twice as much
    decode_tps: float = 0.0
    kv_bytes_per_token: int = 28672  # prompt-cache bytes per token (Qwen2.5-1.5B, fp16 K and V)
    npu_memory_mb: int = 0
    system: str = ""
    chat_template: bool = True
    init_fail: bool = False
    toolkit_version: str | None = None
    """The rkllm-toolkit release the file was converted with (None: the runtime's own)."""
    target_platform: str = "RK3588"
    npu_core_num: int = 3
    model_dtype: str = "W8A8"
    logits_history: str = "keep"
    """``keep``: a logits run with ``keep_history`` keeps its input in the KV cache; ``drop``: it does not."""
    run_overhead_ms: float = 0.0  # simulated fixed cost of a logits run

    def text(self) -> str:
        """The model file's content."""
        lines = [
            MAGIC,
            f"name {escape(self.name)}",
            f"max_context {self.max_context}",
            f"prefill_tps {self.prefill_tps}",
            f"prefill_double_at {self.prefill_double_at}",
            f"decode_tps {self.decode_tps}",
            f"kv_bytes_per_token {self.kv_bytes_per_token}",
            f"npu_memory_mb {self.npu_memory_mb}",
            f"target_platform {self.target_platform}",
            f"npu_core_num {self.npu_core_num}",
            f"model_dtype {self.model_dtype}",
        ]
        if self.logits_history != "keep":
            lines.append(f"logits_history {self.logits_history}")
        if self.run_overhead_ms:
            lines.append(f"run_overhead_ms {self.run_overhead_ms}")
        if self.toolkit_version:
            lines.append(f"toolkit_version {self.toolkit_version}")
        if self.system:
            lines.append(f"system {escape(self.system)}")
        if not self.chat_template:
            lines.append("template none")
        if self.init_fail:
            lines.append("init_fail 1")
        for rule in self.rules:
            lines.extend(rule.lines())
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the model file and return its path."""
        path = Path(path)
        path.write_text(self.text(), encoding="utf-8")
        return path
