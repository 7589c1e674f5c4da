"""A model file is first loaded in a separate process: one for another release or chip never reaches HA's."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import DOMAIN, MODE_IN_PROCESS
from rkllm_runtime.models import Board
from tests.conftest import ModelFactory
from tests.integration.conftest import STRINGS
from tests.integration.test_config_flow import form_input, submit
from tests.models.test_check import NOT_MODELS


async def test_a_file_of_another_release_is_refused_naming_the_release_and_ha_survives(
    hass: HomeAssistant, emulator_library: Path, make_model: ModelFactory
) -> None:
    """The emulator, as the vendor runtime, crashes on such a file: only the check's child dies."""
    old = make_model(toolkit_version="1.1.4")
    result = await submit(hass, form_input(emulator_library, old))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "model_incompatible"}
    assert "needs runtime 1.1.x" in result["description_placeholders"]["error"]
    assert "{error}" in STRINGS["config"]["error"]["model_incompatible"]
    assert os.getpid()  # still here


async def test_a_file_for_another_chip_is_refused_naming_the_chip(
    hass: HomeAssistant, emulator_library: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("custom_components.rkllm.loader.detect_board", lambda: Board(chip="RK3588"))
    rk3576 = make_model(target_platform="RK3576", npu_core_num=2)
    result = await submit(hass, form_input(emulator_library, rk3576))
    assert result["errors"] == {"base": "model_incompatible"}
    assert (
        "converted for an RK3576, and this board is an RK3588" in result["description_placeholders"]["error"]
    )


async def test_an_entry_whose_file_was_replaced_by_an_incompatible_one_fails_setup_for_good(
    hass: HomeAssistant, emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> None:
    path = make_model(toolkit_version="1.1.4")
    data: dict[str, Any] = form_input(emulator_library, path) | {"mode": MODE_IN_PROCESS}
    entry = MockConfigEntry(domain=DOMAIN, data=data, minor_version=2, unique_id=str(path))
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == "model_incompatible"
    assert "message" in STRINGS["exceptions"]["model_incompatible"]


async def test_a_checked_file_is_not_checked_again(
    hass: HomeAssistant, emulator_library: Path, make_model: ModelFactory
) -> None:
    path = make_model()
    result = await submit(hass, form_input(emulator_library, path))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    verdicts = Path(hass.config.path(".storage", DOMAIN, "checked"))
    kept = await hass.async_add_executor_job(lambda: list(verdicts.iterdir()))
    assert len(kept) == 1
    await hass.async_block_till_done()
    assert result["result"].state is ConfigEntryState.LOADED  # set up without a second child
    assert await hass.async_add_executor_job(lambda: list(verdicts.iterdir())) == kept


@pytest.mark.parametrize("kind", NOT_MODELS)
async def test_a_file_that_is_no_model_gets_the_translated_error(
    hass: HomeAssistant, emulator_library: Path, tmp_path: Path, kind: str
) -> None:
    make, said = NOT_MODELS[kind]
    path = tmp_path / "model.rkllm"
    make(path)
    result = await submit(hass, form_input(emulator_library, path))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "not_a_model"}
    assert re.search(said, result["description_placeholders"]["error"])
    assert "{error}" in STRINGS["config"]["error"]["not_a_model"]
