"""What a release is made of: one version, the manifest's requirement, HACS and brand files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
INTEGRATION = REPO / "custom_components" / "rkllm"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
MANIFEST = json.loads((INTEGRATION / "manifest.json").read_text())


def test_the_manifest_requires_this_version_of_the_binding() -> None:
    assert MANIFEST["version"] == PROJECT["version"]
    assert MANIFEST["requirements"] == [f"{PROJECT['name']}=={PROJECT['version']}"]


def test_the_changelog_describes_this_version() -> None:
    assert f"## [{PROJECT['version']}]" in (REPO / "CHANGELOG.md").read_text()


def test_hacs_installs_the_release_zip() -> None:
    hacs = json.loads((REPO / "hacs.json").read_text())
    assert hacs["zip_release"] is True
    assert hacs["filename"] == "rkllm.zip"
    assert hacs["name"] == MANIFEST["name"]
    release = (REPO / ".github" / "workflows" / "release.yml").read_text()
    assert hacs["filename"] in release


def test_the_manifest_points_at_one_repository() -> None:
    home = PROJECT["urls"]["Homepage"]
    assert MANIFEST["documentation"] == home
    assert MANIFEST["issue_tracker"] == PROJECT["urls"]["Issues"] == f"{home}/issues"
    assert MANIFEST["codeowners"]


@pytest.mark.parametrize(
    ("name", "square"),
    [("icon.png", 256), ("icon@2x.png", 512), ("dark_icon.png", 256), ("dark_icon@2x.png", 512)],
)
def test_brand_icons(name: str, square: int) -> None:
    with Image.open(INTEGRATION / "brand" / name) as image:
        assert image.format == "PNG"
        assert image.size == (square, square)
        assert image.mode == "RGBA"


@pytest.mark.parametrize(
    ("name", "height"),
    [("logo.png", 128), ("logo@2x.png", 256), ("dark_logo.png", 128), ("dark_logo@2x.png", 256)],
)
def test_brand_logos(name: str, height: int) -> None:
    with Image.open(INTEGRATION / "brand" / name) as image:
        assert image.format == "PNG"
        assert image.height == height
        assert image.width >= image.height
