"""Home Assistant pointed at HAProxy: the rkllm integration (server mode) and HA's own Ollama integration."""

from __future__ import annotations

from ipaddress import ip_address
from urllib.parse import urlparse

from homeassistant.components import conversation
from homeassistant.config_entries import SOURCE_ZEROCONF
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import intent
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import CONF_MODE, DOMAIN, MODE_SERVER, SUBENTRY_CONVERSATION
from custom_components.rkllm.schemas import default_conversation_options
from tests.lb.conftest import KEY, Farm
from tests.lb.test_haproxy import NEW_WORDS
from tests.ollama_entry import ollama_entry
from tests.server.conftest import MODEL


async def set_up(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    assert await async_setup_component(hass, "conversation", {})
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def talk(hass: HomeAssistant, agent: str, text: str, conversation_id: str | None) -> str:
    """One turn; the conversation's id."""
    result = await conversation.async_converse(hass, text, conversation_id, Context(), agent_id=agent)
    assert result.response.response_type is not intent.IntentResponseType.ERROR, result.response.speech
    assert result.response.speech["plain"]["speech"] == "Hello! How can I help?"
    return result.conversation_id


async def boards_of(hass: HomeAssistant, farm: Farm, path: str) -> list[tuple[str, str]]:
    return await hass.async_add_executor_job(farm.routed, path)


async def prefills(hass: HomeAssistant, farm: Farm, board: str) -> list[int]:
    return await hass.async_add_executor_job(farm.prefills, board)


def balancer_entry(farm: Farm) -> MockConfigEntry:
    """The integration's model entry with the balancer's address (as the user types it)."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="qwen",
        data={CONF_MODE: MODE_SERVER, CONF_URL: farm.url, CONF_API_KEY: KEY, CONF_MODEL: MODEL},
        minor_version=2,
        unique_id=f"{farm.url}/{MODEL}",
        subentries_data=[
            {
                "data": default_conversation_options(),
                "subentry_type": SUBENTRY_CONVERSATION,
                "title": "RKLLM conversation",
                "unique_id": None,
            }
        ],
    )


async def test_the_integration_keeps_each_conversation_on_one_board(
    hass: HomeAssistant, enable_custom_integrations: None, farm: Farm
) -> None:
    entry = balancer_entry(farm)
    await set_up(hass, entry)
    agent = "conversation.rkllm_conversation"
    first = await talk(hass, agent, "hello there", None)
    await talk(hass, agent, "hello again", first)
    await talk(hass, agent, "and once more", first)
    second = await talk(hass, agent, "hi, another satellite here", None)
    await talk(hass, agent, "hi again", second)

    routed = await boards_of(hass, farm, "/rkllm/chat")
    assert [key for _, key in routed] == [first] * 3 + [second] * 2  # the header names the conversation
    (board,) = {board for board, key in routed if key == first}
    assert len({b for b, key in routed if key == second}) == 1
    assert all(tokens < NEW_WORDS for tokens in (await prefills(hass, farm, board))[1:3])

    await hass.async_add_executor_job(farm.stop_board, board)
    await talk(hass, agent, "are you still there", first)  # answered by another board
    await talk(hass, agent, "good", first)
    moved = [b for b, key in (await boards_of(hass, farm, "/rkllm/chat"))[5:] if key == first]
    assert len(moved) == 2
    assert len(set(moved)) == 1
    assert moved[0] != board
    *_, rebuild, follow_up = await prefills(hass, farm, moved[0])
    assert rebuild > NEW_WORDS  # the conversation is read again there, once
    assert follow_up < NEW_WORDS
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_discovery_still_offers_each_board(
    hass: HomeAssistant, enable_custom_integrations: None, farm: Farm
) -> None:
    """Boards announce themselves one by one; the balancer's entry does not hide them."""
    entry = balancer_entry(farm)
    await set_up(hass, entry)
    for name, board in farm.boards.items():
        address = urlparse(board.url)
        info = ZeroconfServiceInfo(
            ip_address=ip_address(address.hostname or ""),
            ip_addresses=[ip_address(address.hostname or "")],
            hostname=f"{name}.local.",
            name=f"{name}._rkllm._tcp.local.",
            port=address.port,
            type="_rkllm._tcp.local.",
            properties={"models": MODEL, "auth": "bearer", "tls": "0"},
        )
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info
        )
        assert result["type"] is FlowResultType.FORM
        assert result["step_id"] == MODE_SERVER
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert sorted(flow["context"]["title_placeholders"]["name"] for flow in flows) == sorted(farm.boards)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_home_assistants_ollama_integration_keeps_its_conversations_on_one_board(
    hass: HomeAssistant, farm: Farm
) -> None:
    entry = ollama_entry(farm.url, KEY)
    await set_up(hass, entry)
    agent = "conversation.ollama_conversation"
    conversations = []
    for n in range(4):
        conversation_id = await talk(hass, agent, f"hello from satellite {n}", None)
        await talk(hass, agent, "hello again", conversation_id)
        await talk(hass, agent, "and once more", conversation_id)
        conversations.append(conversation_id)

    routed = [board for board, _ in await boards_of(hass, farm, "/api/chat")]
    per_conversation = [routed[n : n + 3] for n in range(0, 12, 3)]
    assert all(len(set(turns)) == 1 for turns in per_conversation), per_conversation
    assert len(set(routed)) >= 2  # keyed by each conversation's first words, they spread
    for board in set(routed):
        runs = [n % 3 for n, b in enumerate(routed) if b == board]
        tokens = await prefills(hass, farm, board)
        assert len(tokens) == len(runs)
        assert all(count < NEW_WORDS for step, count in zip(runs, tokens, strict=True) if step > 0)

    board = per_conversation[0][0]
    await hass.async_add_executor_job(farm.stop_board, board)
    await talk(hass, agent, "still there?", conversations[0])
    await talk(hass, agent, "good", conversations[0])
    moved = [b for b, _ in (await boards_of(hass, farm, "/api/chat"))[12:]]
    assert len(set(moved)) == 1
    assert moved[0] != board
    *_, rebuild, follow_up = await prefills(hass, farm, moved[0])
    assert rebuild > NEW_WORDS
    assert follow_up < NEW_WORDS
    assert await hass.config_entries.async_unload(entry.entry_id)
