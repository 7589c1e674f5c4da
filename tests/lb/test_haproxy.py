"""Ollama and OpenAI clients through HAProxy: conversations keep their board, spread, and fail over."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.lb.conftest import BOARD_HEADER, KEY, Farm
from tests.server.conftest import MODEL, SYSTEM

NEW_WORDS = 40  # a follow-up prefills fewer tokens than this: its own words, not the conversation


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def turn(farm: Farm, messages: list[dict[str, Any]], text: str) -> str:
    """Add a user turn and the reply to ``messages``; the board that answered."""
    messages.append(user(text))
    board, reply = farm.chat(messages)
    messages.append({"role": "assistant", "content": reply})
    return board


def test_every_turn_of_a_conversation_stays_on_its_board(farm: Farm) -> None:
    runs: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
    for conversation in range(6):
        messages = [{"role": "system", "content": SYSTEM}]
        for step in range(3):
            board = turn(farm, messages, f"Conversation {conversation}, question {step}: what time is it?")
            runs[board].append((conversation, step))
    boards_of = {c: {board for board, done in runs.items() for c2, _ in done if c2 == c} for c in range(6)}
    assert all(len(boards) == 1 for boards in boards_of.values()), boards_of
    assert len(runs) == 3, runs  # six conversations spread over the three boards
    for board, done in runs.items():
        prefills = farm.prefills(board)
        assert len(prefills) == len(done)
        follow_ups = [tokens for (_, step), tokens in zip(done, prefills, strict=True) if step > 0]
        assert follow_ups
        assert all(tokens < NEW_WORDS for tokens in follow_ups), (board, done, prefills)
    assert farm.prefills("board1")[0] > 300  # a board's first request reads the whole system prompt


def test_follow_ups_on_their_board_prefill_only_their_new_words(farm: Farm) -> None:
    """As the unit configures a board: five turns, and no follow-up reads the conversation again."""
    messages = [{"role": "system", "content": SYSTEM}]
    boards = {
        turn(farm, messages, f"Question {step}: which lights are on in the house?") for step in range(5)
    }
    (board,) = boards
    first, *follow_ups = farm.prefills(board)
    assert first > 300  # the system prompt, once
    assert len(follow_ups) == 4
    assert all(tokens < NEW_WORDS for tokens in follow_ups), follow_ups


def boards_of_keys(farm: Farm) -> dict[str, list[str]]:
    """Conversation headers by the board each hashes to, found by asking (one request each)."""
    probes: defaultdict[str, list[str]] = defaultdict(list)
    for n in range(40):
        board, _ = farm.chat([user("hello")], conversation=f"conversation-{n}")
        probes[board].append(f"conversation-{n}")
    assert len(probes) == 3  # by the header alone, keys spread over every board
    return probes


def until_status(farm: Farm, board: str, condition: Callable[[dict[str, Any]], bool]) -> None:
    """Until the model's entry in a board's /rkllm/status meets ``condition``."""
    deadline = time.monotonic() + 30
    while not condition(farm.boards[board].http("GET", "/rkllm/status").json()["models"][MODEL]):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_concurrent_conversations_stay_on_their_busy_board(farm: Farm) -> None:
    """Three conversations that hash to one board, at once: they wait in its queue, none moves."""
    probes = boards_of_keys(farm)
    home, keys = max(probes.items(), key=lambda item: len(item[1]))
    crowded = keys[:3]
    assert len(crowded) == 3

    def tell(conversation: str) -> str:
        board, reply = farm.chat([user("tell me a story")], conversation=conversation)
        assert reply.startswith("Once upon a time")
        return board

    with ThreadPoolExecutor(3) as pool:
        boards = Counter(pool.map(tell, crowded))
    # hash-balance-factor 300 on three boards: a board may take every request under way, and
    # it holds three (one answer, two waiting), so none was refused or sent elsewhere.
    assert boards == {home: 3}, boards
    assert len(farm.prefills(home)) == len(probes[home]) + 3  # each ran there, none was refused


def test_a_pulled_board_costs_its_conversation_one_rebuild(farm: Farm) -> None:
    messages = [{"role": "system", "content": SYSTEM}]
    first = turn(farm, messages, "Which rooms are still lit at this hour of the night?")
    assert turn(farm, messages, "And which of them have their blinds open?") == first
    farm.stop_board(first)

    moved = turn(farm, messages, "Then close the blinds everywhere, please.")  # retried on another board
    assert moved != first
    assert turn(farm, messages, "Thanks, that is all for now.") == moved
    rebuild, follow_up = farm.prefills(moved)
    assert rebuild > NEW_WORDS  # the conversation is read again there, once
    assert follow_up < NEW_WORDS
    farm.wait_until_down(first)  # the health checks take it out
    assert turn(farm, messages, "Good night then.") == moved


def test_a_request_waiting_on_a_killed_board_is_answered_by_another(farm: Farm) -> None:
    """The board answering dies: the request in its queue got no byte, so HAProxy sends it elsewhere."""
    home, keys = max(boards_of_keys(farm).items(), key=lambda item: len(item[1]))
    with ThreadPoolExecutor(2) as pool:
        story = pool.submit(farm.chat, [user("tell me a story")], keys[0])
        until_status(farm, home, lambda status: status["engine_state"] == "generating")
        waiting = pool.submit(farm.chat, [user("hello")], keys[1])
        until_status(farm, home, lambda status: status["waiting"] == 1)
        farm.stop_board(home)
        board, reply = waiting.result()
        with pytest.raises(httpx.RemoteProtocolError):
            story.result()  # its answer had begun: it ends, and the client sees that it did
    assert board != home
    assert reply == "Hello! How can I help?"


def test_openai_streams_pass_through_as_they_are_generated(farm: Farm) -> None:
    client = openai.OpenAI(base_url=f"{farm.url}/v1", api_key=KEY, max_retries=0)
    with client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "tell me a story"}], stream=True
    ) as stream:
        chunks = iter(stream)
        first = next(chunks)
        board = farm.boards[stream.response.headers[BOARD_HEADER]]
        status = board.http("GET", "/rkllm/status").json()["models"][MODEL]
        assert status["engine_state"] == "generating"  # the first words came before the last were made
        text = (first.choices[0].delta.content or "") + "".join(
            c.choices[0].delta.content or "" for c in chunks
        )
    client.close()
    assert text.startswith("Once upon a time")
    assert httpx.get(f"{farm.url}/health").json() == {"status": "ok"}
