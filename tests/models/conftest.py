"""A hub-layout file server on loopback, and emulator model files it serves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket

from tests.hub_server import Hub, model_bytes, running_hub

__all__ = ["FILE", "REPO", "model_bytes"]

REPO = "someone/Qwen2.5-1.5B-Instruct-rk3588-1.2.3"
FILE = "qwen2.5-1.5b-rk3588-w8a8.rkllm"


@pytest.fixture(autouse=True)
def allow_sockets() -> None:
    """The hub is a real server on loopback."""
    pytest_socket.enable_socket()
    pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


@pytest.fixture
def hub() -> Iterator[Hub]:
    with running_hub() as running:
        yield running
