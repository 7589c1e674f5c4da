"""A user's installation: Home Assistant without this project, the integration copied in, and its
requirement installed by Home Assistant itself from the wheel that ``uv build`` makes.

No network: the fresh virtual environment is the locked ``hass`` dependency group, installed
``--offline`` from the uv cache that ``scripts/setup`` filled, and Home Assistant's installer
(``uv pip install``, homeassistant/util/package.py) runs offline too and finds the wheel through
``UV_FIND_LINKS``, as it would find it on PyPI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from tests.e2e.conftest import REPO, DevHome, running_dev_home, uv

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
AGENT = "conversation.rkllm_conversation"
REPLY = "Hello from an installed integration."
BUILD_OUTPUTS = (".so", ".o", ".pyc", ".gguf", ".rkllm")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the pinned Home Assistant and without this project."""
    venv = tmp_path_factory.mktemp("install") / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"UV_PROJECT_ENVIRONMENT": str(venv)}
    uv("sync", "--locked", "--only-group", "hass", "--python", sys.executable, env=env)  # HA needs 3.14.2
    absent = subprocess.run(
        [venv / "bin" / "python", "-c", "import rkllm_runtime"], cwd=venv, capture_output=True, check=False
    )
    assert absent.returncode != 0
    return venv


@pytest.fixture(scope="module")
def installed_home(
    fresh_venv: Path, dist: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevHome]:
    """That environment's ``hass`` with a copied integration, configured against the emulator."""
    root = tmp_path_factory.mktemp("home")
    model = EmulatedModel(rules=[Rule(reply=REPLY)]).write(root / "model.rkllm")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {
        "UV_FIND_LINKS": str(dist),
        "UV_OFFLINE": "1",
    }
    python = str(fresh_venv / "bin" / "python")
    with running_dev_home(
        python, root / "config", build_cached("1.3"), model, "--install-requirements", env=env
    ) as home:
        yield home


def test_the_wheel_is_pure_python_without_build_outputs(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"rkllm_runtime-{VERSION}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "rkllm_runtime/py.typed" in names
    assert "rkllm_runtime/emulator/scripted.c" in names  # the emulator ships as source
    assert [name for name in names if name.endswith(BUILD_OUTPUTS)] == []
    assert {name.split("/")[0] for name in names} == {"rkllm_runtime", f"rkllm_runtime-{VERSION}.dist-info"}


def test_the_sdist_holds_the_package_and_its_documents(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert {name.split("/")[0] for name in names} == {
        "rkllm_runtime", "README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "PKG-INFO", ".gitignore",
    }  # fmt: skip
    assert [name for name in names if name.endswith(BUILD_OUTPUTS)] == []


def test_home_assistant_installs_the_requirement_and_the_agent_answers(
    installed_home: DevHome, fresh_venv: Path
) -> None:
    reply = installed_home.request(
        "POST", "/api/conversation/process", {"text": "Hello! Who are you?", "agent_id": AGENT}
    )
    assert reply["response"]["speech"]["plain"]["speech"] == REPLY
    entries = installed_home.request("GET", "/api/config/config_entries/entry?domain=rkllm")
    assert [entry["state"] for entry in entries] == ["loaded"]
    # Home Assistant installed the wheel into its own environment (the fixture saw it absent).
    where = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", "import rkllm_runtime, importlib.metadata as m;"
         "print(rkllm_runtime.__file__, m.version('rkllm-runtime'))"],
        cwd=fresh_venv, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert Path(where[0]).is_relative_to(fresh_venv)
    assert where[1] == VERSION


def test_home_assistant_serves_the_integrations_own_brand_images(installed_home: DevHome) -> None:
    brand = installed_home.config / "custom_components" / "rkllm" / "brand"
    for image in ("icon.png", "dark_logo@2x.png"):
        assert (
            installed_home.read("GET", f"/api/brands/integration/rkllm/{image}")
            == (brand / image).read_bytes()
        )
