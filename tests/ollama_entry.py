"""Home Assistant's Ollama integration pointed at rkllm-server (the tests that need Home Assistant).

Apart from tests/server/conftest.py, which also runs on Python 3.11 where Home Assistant does not.
"""

from __future__ import annotations

from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.server.conftest import MODEL


def ollama_entry(
    url: str, api_key: str, model: str = MODEL, prompt: str = "You are a voice assistant."
) -> MockConfigEntry:
    """Home Assistant's Ollama integration for ``url``, with an Assist agent on ``model``."""
    return MockConfigEntry(
        domain="ollama",
        data={"url": url, "api_key": api_key},
        version=3,
        minor_version=3,
        subentries_data=[
            {
                "data": {"model": model, "prompt": prompt, "llm_hass_api": ["assist"],
                         "max_history": 20, "num_ctx": 8192, "keep_alive": -1, "think": False},
                "subentry_type": "conversation",
                "title": "Ollama Conversation",
                "unique_id": None,
            }
        ],
    )  # fmt: skip
