"""Model management: pulls from a hub-layout server, a models folder loaded on first use, idle unloading."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ollama
import pytest

from rkllm_runtime.emulator import build_cached
from tests.hub_server import Hub, model_bytes, running_hub
from tests.server.conftest import StartServer

CATALOG_REPO = "Azurastar2903/Qwen2.5-1.5B-Instruct-rk3588-1.2.1"  # qwen2.5:1.5b in the catalog
CATALOG_FILE = "Qwen2.5-1.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0.rkllm"
HF_NAME = "hf.co/someone/tiny-rk3588-1.2.3/tiny.rkllm"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def hub() -> Iterator[Hub]:
    with running_hub() as running:
        yield running


@pytest.fixture
def library_1_2() -> Path:
    """Runtime 1.2.3: the catalog's 1.2.x files fit it."""
    return build_cached("1.2")


def test_a_catalog_name_is_pulled_with_progress_listed_and_loaded_on_first_use(
    start_server: StartServer, hub: Hub, tmp_path: Path, library_1_2: Path
) -> None:
    hub.add(CATALOG_REPO, CATALOG_FILE, model_bytes(padding_mb=25))
    server = start_server(
        "--models-dir", str(tmp_path), library=library_1_2, models={}, env={"HF_ENDPOINT": hub.url}
    )
    client = server.ollama()
    assert client.list().models == []

    records = list(client.pull("qwen2.5:1.5b", stream=True))

    statuses = [record.status for record in records]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [record for record in records if record.completed is not None]
    assert len(progress) >= 3
    assert progress[-1].completed == progress[-1].total == (tmp_path / CATALOG_FILE).stat().st_size
    assert [m.model for m in client.list().models] == ["qwen2.5:1.5b"]
    assert client.ps().models == []  # not loaded until used
    reply = client.chat("qwen2.5:1.5b", messages=HI)
    assert reply.message.content == "Hello from the hub."
    assert [m.model for m in client.ps().models] == ["qwen2.5:1.5b"]
    # Pulled again: the recorded SHA-256 matches the hub's, nothing is downloaded.
    assert client.pull("qwen2.5:1.5b").status == "success"
    assert len(hub.gets(CATALOG_FILE)) == 1


def test_an_hf_name_is_pulled_then_deleted(start_server: StartServer, hub: Hub, tmp_path: Path) -> None:
    hub.add("someone/tiny-rk3588-1.2.3", "tiny.rkllm", model_bytes())
    server = start_server("--models-dir", str(tmp_path), models={}, env={"HF_ENDPOINT": hub.url})
    client = server.ollama()
    assert client.pull(HF_NAME).status == "success"
    assert [m.model for m in client.list().models] == [HF_NAME]
    assert client.chat(HF_NAME, messages=HI).message.content == "Hello from the hub."

    client.delete(HF_NAME)

    assert client.list().models == []
    assert not (tmp_path / "tiny.rkllm").exists()
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete(HF_NAME)
    assert missing.value.status_code == 404


def test_a_file_for_another_release_is_refused_naming_the_release_it_needs(
    start_server: StartServer, hub: Hub, tmp_path: Path
) -> None:
    hub.add("someone/tiny-rk3588-1.2.3", "tiny.rkllm", model_bytes(toolkit_version="1.2.3"))
    server = start_server("--models-dir", str(tmp_path), models={}, env={"HF_ENDPOINT": hub.url})
    with pytest.raises(
        ollama.ResponseError, match=r"needs runtime 1\.2\.x; this runtime is 1\.3\.1"
    ) as refused:
        server.ollama().pull(HF_NAME)
    assert refused.value.status_code == 422
    assert not (tmp_path / "tiny.rkllm").exists()
    assert server.ollama().list().models == []
    assert server.process.poll() is None  # the crash was the check's child's


def test_pull_errors_are_named(start_server: StartServer, hub: Hub, tmp_path: Path) -> None:
    hub.add("someone/tiny-rk3588-1.2.3", "tiny.rkllm", model_bytes(), announced_sha256="00" * 32)
    server = start_server("--models-dir", str(tmp_path), models={}, env={"HF_ENDPOINT": hub.url})
    client = server.ollama()
    with pytest.raises(ollama.ResponseError, match="neither in the catalog") as unknown:
        client.pull("llama3:8b")
    assert unknown.value.status_code == 404
    seen = []
    with pytest.raises(ollama.ResponseError, match="does not have the SHA-256 the hub announced"):
        seen.extend(record.status for record in client.pull(HF_NAME, stream=True))  # the error comes last
    assert seen[0] == "pulling manifest"
    with pytest.raises(ollama.ResponseError, match="does not have the SHA-256 the hub announced") as wrong:
        client.pull(HF_NAME)
    assert wrong.value.status_code == 502
    assert not (tmp_path / "tiny.rkllm").exists()


def test_a_server_without_a_models_folder_says_so(start_server: StartServer) -> None:
    with pytest.raises(ollama.ResponseError, match="--models-dir") as refused:
        start_server().ollama().pull("qwen3:1.7b")
    assert refused.value.status_code == 400


def copy_models(folder: Path, *names: str, npu_memory_mb: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.rkllm").write_bytes(model_bytes(name=name, npu_memory_mb=npu_memory_mb))


def test_keep_alive_zero_unloads_and_the_next_request_loads_again(
    start_server: StartServer, tmp_path: Path
) -> None:
    copy_models(tmp_path / "models", "alpha")
    server = start_server("--models-dir", str(tmp_path / "models"), models={})
    client = server.ollama()
    assert [m.model for m in client.list().models] == ["alpha:latest"]
    assert client.chat("alpha", messages=HI, keep_alive=0).message.content == "Hello from the hub."
    wait_until(lambda: client.ps().models == [])
    assert client.chat("alpha", messages=HI).message.content == "Hello from the hub."
    assert [m.model for m in client.ps().models] == ["alpha:latest"]
    assert len(re.findall(r"Model alpha:latest is ready", server.log())) == 2
    assert len(re.findall(r"Model alpha:latest was unloaded", server.log())) == 1


def test_max_loaded_unloads_the_least_recently_used_model(start_server: StartServer, tmp_path: Path) -> None:
    copy_models(tmp_path / "models", "alpha", "beta", "gamma")
    server = start_server("--models-dir", str(tmp_path / "models"), "--max-loaded", "2", models={})
    client = server.ollama()
    for name in ("alpha", "beta", "alpha", "gamma"):
        client.chat(name, messages=HI)
    assert sorted(m.model for m in client.ps().models) == ["alpha:latest", "gamma:latest"]
    assert re.findall(r"Model (\S+) was unloaded", server.log()) == ["beta:latest"]


def test_a_full_npu_unloads_the_least_recently_used_idle_model(
    start_server: StartServer, tmp_path: Path
) -> None:
    copy_models(tmp_path / "models", "alpha", "beta", npu_memory_mb=600)
    server = start_server(
        "--models-dir", str(tmp_path / "models"), models={}, env={"RKLLM_EMU_NPU_MEMORY_MB": "1000"}
    )
    client = server.ollama()
    client.chat("alpha", messages=HI)
    assert client.chat("beta", messages=HI).message.content == "Hello from the hub."
    assert [m.model for m in client.ps().models] == ["beta:latest"]
    assert "failed to allocate 600 MB of NPU memory" in server.log()
    assert re.findall(r"Model (\S+) was unloaded", server.log()) == ["alpha:latest"]


def test_an_idle_model_is_unloaded_after_its_keep_alive(start_server: StartServer, tmp_path: Path) -> None:
    copy_models(tmp_path / "models", "alpha")
    server = start_server("--models-dir", str(tmp_path / "models"), "--keep-alive", "0.5", models={})
    client = server.ollama()
    client.chat("alpha", messages=HI)
    expiry = client.ps().models[0].expires_at
    assert expiry is not None
    assert expiry.year < 2999
    wait_until(lambda: client.ps().models == [])


def wait_until(condition: Callable[[], bool], attempts: int = 100) -> None:
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.1)
    pytest.fail("the condition never held")


def test_pull_from_the_command_line_downloads_and_checks(hub: Hub, tmp_path: Path, library_1_2: Path) -> None:
    hub.add("someone/tiny-rk3588-1.2.3", "tiny.rkllm", model_bytes())
    hub.add("someone/old-rk3588-1.1.4", "old.rkllm", model_bytes(toolkit_version="1.1.4"))
    command = [sys.executable, "-m", "rkllm_runtime.server", "pull", "--models-dir", str(tmp_path)]
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    done = subprocess.run(
        [*command, "--library", str(library_1_2), HF_NAME],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"success: {tmp_path / 'tiny.rkllm'}"
    refused = subprocess.run(
        [*command, "--library", str(library_1_2), "someone/old-rk3588-1.1.4", "old.rkllm"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert refused.returncode == 1
    assert "needs runtime 1.1.x; this runtime is 1.2.3" in refused.stderr
    assert not (tmp_path / "old.rkllm").exists()


def test_the_catalog_lists_what_fits_first_with_the_reasons(
    start_server: StartServer, tmp_path: Path, library_1_2: Path
) -> None:
    server = start_server("--models-dir", str(tmp_path), library=library_1_2, models={})
    catalog = server.http("GET", "/rkllm/catalog").json()
    assert catalog["runtime_release"] == "1.2.3"
    fits = [model["fits"] for model in catalog["models"]]
    assert fits == sorted(fits, reverse=True)
    old = next(model for model in catalog["models"] if model["name"] == "qwen2.5:0.5b")
    assert old["reasons"] == ["needs runtime 1.1.x (converted with toolkit 1.1.4); this runtime is 1.2.3"]
    assert "hf.co/Azurastar2903/Qwen2.5-1.5B-Instruct-rk3588-1.2.1/" + CATALOG_FILE in next(
        model["names"] for model in catalog["models"] if model["name"] == "qwen2.5:1.5b"
    )
    printed = subprocess.run(
        [sys.executable, "-m", "rkllm_runtime.server", "catalog", "--library", str(library_1_2),
         "--models-dir", str(tmp_path)],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert printed[0].endswith("runtime: 1.2.3")
    assert (
        printed[-1].strip()
        == "does not fit: needs runtime 1.1.x (converted with toolkit 1.1.4); this runtime is 1.2.3"
    )
