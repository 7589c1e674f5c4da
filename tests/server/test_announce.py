"""The zeroconf announcement, on loopback only."""

from __future__ import annotations

from pathlib import Path

from rkllm_runtime.server.announce import SERVICE_TYPE, service_addresses, service_info
from rkllm_runtime.server.config import ServerConfig
from tests.server.conftest import MODEL, StartServer


def test_service_info_carries_the_models_and_how_to_connect(tmp_path: Path) -> None:
    config = ServerConfig(
        library=tmp_path / "lib.so",
        models={"qwen2.5:1.5b": tmp_path / "a", "qwen3:4b": tmp_path / "b"},
        host="192.168.1.20",
        api_key="key",
    )
    info = service_info(config, "0.1.0", 8080, name="rock5b")
    assert info.type == SERVICE_TYPE
    assert info.name == f"rock5b.{SERVICE_TYPE}"
    assert info.server == "rock5b.local."
    assert info.port == 8080
    assert info.parsed_addresses() == ["192.168.1.20"]
    assert info.decoded_properties == {
        "models": "qwen2.5:1.5b,qwen3:4b",
        "version": "0.1.0",
        "api": "ollama,openai",
        "auth": "bearer",
        "tls": "0",
    }


def test_unspecified_host_announces_every_non_loopback_address() -> None:
    assert "127.0.0.1" not in service_addresses("0.0.0.0")
    assert service_addresses("127.0.0.1") == ["127.0.0.1"]


def test_server_announces_and_says_goodbye(start_server: StartServer) -> None:
    server = start_server("--zeroconf", "on")
    assert server.ollama().list().models[0].model == MODEL
    assert server.stop() == 0
    log = server.log()
    assert f".{SERVICE_TYPE} on port {server.url.rsplit(':', 1)[1]}" in log
    assert "Traceback" not in log
