"""rkllm-server's command line: which model a vision encoder belongs to."""

from __future__ import annotations

from pathlib import Path

import pytest

from rkllm_runtime.server.cli import parse_args


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    names = ("lib.so", "vl.rkllm", "text.rkllm", "vl.rknn")
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    return {name: tmp_path / name for name in names}


def test_a_bare_encoder_belongs_to_the_only_model(files: dict[str, Path]) -> None:
    config = parse_args(
        [
            "--library",
            str(files["lib.so"]),
            "--model",
            f"vl={files['vl.rkllm']}",
            "--encoder",
            str(files["vl.rknn"]),
        ]
    )
    assert config.encoders == {"vl": files["vl.rknn"]}


def test_a_named_encoder_belongs_to_its_model(files: dict[str, Path]) -> None:
    config = parse_args(
        [
            "--library", str(files["lib.so"]),
            "--model", f"vl={files['vl.rkllm']}",
            "--model", f"text={files['text.rkllm']}",
            "--encoder", f"vl={files['vl.rknn']}",
        ]
    )  # fmt: skip
    assert config.encoders == {"vl": files["vl.rknn"]}


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        ("{rknn}", "expected NAME=FILE"),
        ("vl={missing}", "no file at"),
        ("other={rknn}", "expected NAME=FILE"),
    ],
)
def test_an_encoder_without_its_model_or_file_is_refused(
    files: dict[str, Path], encoder: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--library", str(files["lib.so"]),
        "--model", f"vl={files['vl.rkllm']}",
        "--model", f"text={files['text.rkllm']}",
        "--encoder", encoder.format(rknn=files["vl.rknn"], missing=files["vl.rknn"].with_name("gone.rknn")),
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_model_without_an_encoder_reads_no_images(files: dict[str, Path]) -> None:
    config = parse_args(["--library", str(files["lib.so"]), "--model", f"text={files['text.rkllm']}"])
    assert config.encoders == {}
