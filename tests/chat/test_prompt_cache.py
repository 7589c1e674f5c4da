"""Prompt-cache files on disk: the store alone, with the runtime's save played by writing the staging file."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from rkllm_runtime.chat.prompt_cache import STALE_STAGING_S, PromptCacheKey, PromptCacheStore, model_identity

KEY = PromptCacheKey("1.2.3", "model.rkllm:10:1", "system-a")


def save(store: PromptCacheStore, key: PromptCacheKey, content: bytes) -> Path:
    """Save as the engine does: the runtime writes the staging path, then the store records it."""
    staging = store.staging_path(key)
    assert staging is not None
    staging.write_bytes(content)
    store.saved(key)
    return store.path_for(key)


def test_a_saved_file_is_found_with_its_sidecar(tmp_path: Path) -> None:
    store = PromptCacheStore(tmp_path)
    assert store.lookup(KEY) is None
    path = save(store, KEY, b"kv" * 100)
    assert store.lookup(KEY) == path
    record = json.loads(path.with_suffix(".json").read_text())
    assert (record["key"], record["size"]) == (KEY.as_dict(), 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


@pytest.mark.parametrize(
    "other",
    [
        PromptCacheKey("1.3.1", KEY.model_identity, KEY.system_key),
        PromptCacheKey(KEY.runtime_release, "model.rkllm:10:2", KEY.system_key),
        PromptCacheKey(KEY.runtime_release, KEY.model_identity, "system-b"),
    ],
    ids=["release", "model", "system prompt"],
)
def test_each_part_of_the_key_names_another_file(tmp_path: Path, other: PromptCacheKey) -> None:
    store = PromptCacheStore(tmp_path)
    save(store, KEY, b"kv")
    assert store.path_for(other) != store.path_for(KEY)
    assert store.lookup(other) is None
    assert store.lookup(KEY) is not None


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"kv" * 99),  # truncated
        lambda path: path.write_bytes(b"KV" * 100),  # altered, same size
        lambda path: path.with_suffix(".json").write_text("{"),  # unreadable sidecar
        lambda path: path.with_suffix(".json").unlink(),  # no sidecar
    ],
    ids=["truncated", "altered", "unreadable sidecar", "no sidecar"],
)
def test_a_damaged_file_is_deleted_never_returned(tmp_path: Path, damage: object) -> None:
    store = PromptCacheStore(tmp_path)
    path = save(store, KEY, b"kv" * 100)
    damage(path)  # type: ignore[operator]
    assert store.lookup(KEY) is None
    assert list(tmp_path.iterdir()) == []


def test_the_least_recently_used_files_go_beyond_the_bound(tmp_path: Path) -> None:
    store = PromptCacheStore(tmp_path, max_bytes=250)
    keys = [PromptCacheKey("1.2.3", "m", f"system-{n}") for n in range(3)]
    first = save(store, keys[0], b"a" * 100)
    os.utime(first, (time.time() - 60, time.time() - 60))
    save(store, keys[1], b"b" * 100)
    assert store.lookup(keys[0]) == first  # used again: now the most recent
    save(store, keys[2], b"c" * 100)
    assert [store.lookup(key) is not None for key in keys] == [True, False, True]
    assert store.total_bytes() == 200


def test_an_unfinished_save_leaves_nothing(tmp_path: Path) -> None:
    store = PromptCacheStore(tmp_path)
    staging = store.staging_path(KEY)
    assert staging is not None
    staging.write_bytes(b"half")
    store.abandon(KEY)
    assert list(tmp_path.iterdir()) == []
    store.saved(KEY)  # the runtime saved nothing: nothing is recorded
    assert store.lookup(KEY) is None


def test_stale_staging_files_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    store = PromptCacheStore(tmp_path)
    stale, fresh = tmp_path / "old.rkcache.tmp", tmp_path / "new.rkcache.tmp"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"x")
    past = time.time() - STALE_STAGING_S - 60
    os.utime(stale, (past, past))
    store.staging_path(KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.rkcache.tmp"]


def test_a_failing_directory_warns_once_and_the_store_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    store = PromptCacheStore(blocked / "caches")
    with caplog.at_level(logging.DEBUG):
        assert store.staging_path(KEY) is None
        assert store.lookup(KEY) is None
        assert store.staging_path(KEY) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "answering without them" in warnings[0].getMessage()


def test_model_identity_changes_with_the_file(tmp_path: Path) -> None:
    model = tmp_path / "model.rkllm"
    model.write_bytes(b"weights")
    before = model_identity(model)
    assert before.startswith("model.rkllm:7:")
    model.write_bytes(b"other weights")
    assert model_identity(model) != before
