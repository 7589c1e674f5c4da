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
LOCK = tomllib.loads((REPO / "uv.lock").read_text())


def test_the_manifest_requires_this_version_of_the_binding() -> None:
    assert MANIFEST["version"] == PROJECT["version"]
    binding, *others = MANIFEST["requirements"]
    assert binding == f"{PROJECT['name']}=={PROJECT['version']}"
    # The others (huggingface-hub, for downloads) at the versions the lock pins.
    locked = {package["name"]: package["version"] for package in LOCK["package"]}
    assert others == ["huggingface-hub==" + locked["huggingface-hub"]]


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


@pytest.mark.parametrize("variant", ["", "dark_"])
def test_brand_images(variant: str) -> None:
    sizes = {}
    for name in ("icon.png", "icon@2x.png", "logo.png", "logo@2x.png"):
        with Image.open(INTEGRATION / "brand" / f"{variant}{name}") as image:
            assert (image.format, image.mode) == ("PNG", "RGBA")
            sizes[name] = image.size
    assert sizes["icon.png"] == (256, 256)
    assert sizes["icon@2x.png"] == (512, 512)
    assert sizes["logo.png"][1] == 128 <= sizes["logo.png"][0]
    assert sizes["logo@2x.png"] == (2 * sizes["logo.png"][0], 256)
