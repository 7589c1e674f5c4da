"""The catalog and the board it is matched against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkllm_runtime.models import Board, choices, detect_board, load_catalog, lookup, parse_hf_name, reasons
from rkllm_runtime.models.catalog import CATALOG_PATH

GB = 2**30


def fake_root(tmp_path: Path, compatible: bytes, total_kb: int, available_kb: int) -> Path:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/compatible").write_bytes(compatible)
    (tmp_path / "proc/meminfo").write_text(
        f"MemTotal:       {total_kb} kB\nMemFree:         1000 kB\nMemAvailable:   {available_kb} kB\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("compatible", "chip"),
    [
        (b"xunlong,orangepi-5\0rockchip,rk3588s\0", "RK3588"),
        (b"radxa,rock-5b\0rockchip,rk3588\0", "RK3588"),
        (b"armsom,sige5\0rockchip,rk3576\0", "RK3576"),
        (b"raspberrypi,5-model-b\0brcm,bcm2712\0", None),
    ],
)
def test_the_chip_comes_from_the_device_tree(tmp_path: Path, compatible: bytes, chip: str | None) -> None:
    board = detect_board(tmp_path, root=fake_root(tmp_path, compatible, 8_000_000, 6_000_000))
    assert board.chip == chip
    assert board.memory_total_mb == pytest.approx(8_000_000 / 1024)
    assert board.memory_available_mb == pytest.approx(6_000_000 / 1024)
    assert board.disk_free_bytes is not None
    assert board.disk_free_bytes > 0


def test_a_machine_without_a_device_tree_has_no_chip(tmp_path: Path) -> None:
    assert detect_board(root=tmp_path) == Board(chip=None)


def test_every_entry_is_complete_and_cites_its_source() -> None:
    catalog = load_catalog()
    assert len(catalog) >= 5
    assert len({entry.id for entry in catalog}) == len(catalog)
    for entry in catalog:
        assert entry.file.endswith(".rkllm")
        assert entry.chip in {"RK3588", "RK3576"}
        assert entry.sources
        assert entry.sources[0].startswith(f"https://huggingface.co/{entry.repo}/")
        assert entry.size_bytes is not None or entry.size_basis.startswith("approx.")
        assert entry.memory_basis
        assert entry.good_at
    names = {name for entry in catalog for name in entry.ollama}
    assert {"qwen2.5:1.5b", "qwen3:1.7b"} <= names


def test_a_vision_model_lists_both_files_and_their_sources() -> None:
    vision = [entry for entry in load_catalog() if entry.encoder_file]
    assert vision
    for entry in vision:
        assert entry.encoder_file is not None
        assert entry.encoder_file.endswith(".rknn")
        assert f"https://huggingface.co/{entry.repo}/blob/main/{entry.encoder_file}" in entry.sources
        assert entry.encoder_size_bytes is not None or entry.encoder_basis.startswith("approx.")
        assert entry.encode_ms is not None
        # Both files count towards the disk a download needs, and the label says the size is approximate.
        assert entry.size_mb == (entry.approx_size_mb or 0) + (entry.encoder_approx_size_mb or 0)
        assert "approx." in entry.label
    small = next(entry for entry in vision if "qwen3.5:0.8b" in entry.ollama)
    assert (small.encode_ms, small.decode_tps, small.toolkit) == (690, 27.05, "1.3.0")


def test_an_rk3588_with_8_gb_and_runtime_1_2_3_sees_what_fits_first_and_why_the_rest_does_not() -> None:
    board = Board(chip="RK3588", memory_total_mb=7_800, memory_available_mb=6_000, disk_free_bytes=50 * GB)
    ranked = choices(load_catalog(), board, "1.2.3")
    fits = [choice for choice in ranked if choice.fits]
    assert fits
    assert ranked[: len(fits)] == fits
    assert "qwen3-1.7b-rk3588-1.2.1" in [choice.entry.id for choice in fits]
    old = next(choice for choice in ranked if choice.entry.toolkit.startswith("1.1"))
    assert old.reasons == ("needs runtime 1.1.x (converted with toolkit 1.1.4); this runtime is 1.2.3",)


def test_a_small_board_is_told_about_memory_and_disk() -> None:
    board = Board(chip="RK3588", memory_total_mb=4_000, disk_free_bytes=3 * GB)
    by_id = {choice.entry.id: choice for choice in choices(load_catalog(), board, "1.2.3")}
    assert by_id["qwen3-4b-rk3588-1.2.1"].reasons == (
        "needs about 5,000 MB of memory; this board has 4,000 MB",
        "needs 4.4 GB of disk; 3.0 GB free",
    )
    assert by_id["qwen3-0.6b-rk3588-1.2.1"].fits
    # A file already on the disk needs no space.
    entry = by_id["qwen3-4b-rk3588-1.2.1"].entry
    assert len(reasons(entry, board, "1.2.3", downloaded=True)) == 1


def test_an_rk3576_is_told_the_rk3588_files_are_not_for_it() -> None:
    ranked = choices(load_catalog(), Board(chip="RK3576"), None)
    assert all(
        choice.reasons[0].startswith("built for the RK3588; this board is an RK3576") for choice in ranked
    )


def test_ollama_names_choose_the_file_that_fits_this_runtime() -> None:
    catalog, board = load_catalog(), Board(chip="RK3588")
    assert lookup("qwen3:1.7b", catalog, board, "1.2.3").repo == "dulimov/Qwen3-1.7B-rk3588-1.2.1-unsloth-16k"  # type: ignore[union-attr]
    assert lookup("qwen2.5:1.5b:latest".removesuffix(":latest"), catalog, board, "1.2.3").toolkit == "1.2.1"  # type: ignore[union-attr]
    assert lookup("qwen2.5:0.5b", catalog, board, "1.2.3").toolkit == "1.1.4"  # type: ignore[union-attr]
    assert lookup("llama3:8b", catalog, board, "1.2.3") is None


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("hf.co/owner/repo/model.rkllm", ("owner/repo", "model.rkllm")),
        ("huggingface.co/owner/repo/sub/model.rkllm", ("owner/repo", "sub/model.rkllm")),
        ("hf.co/owner/repo", None),
        ("qwen3:1.7b", None),
    ],
)
def test_hf_names(name: str, parsed: tuple[str, str] | None) -> None:
    assert parse_hf_name(name) == parsed


def test_the_catalog_is_data_a_new_file_can_extend(tmp_path: Path) -> None:
    raw = json.loads(CATALOG_PATH.read_text())
    raw["models"].append(raw["models"][0] | {"id": "mine", "ollama": ["mine:1b"], "chip": "RK3576"})
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(raw))
    assert lookup("mine:1b", load_catalog(path), Board(chip="RK3576"), None).id == "mine"  # type: ignore[union-attr]
