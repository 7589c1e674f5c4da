"""Attachments of the AI task (camera snapshots, media files) as the images the model reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from homeassistant.components import ai_task, camera, conversation
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers.entity_platform import AddEntitiesCallback
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockPlatform, mock_platform

from custom_components.rkllm.attachments import async_read_images
from custom_components.rkllm.const import CONF_ENCODER_FILE
from custom_components.rkllm.entity import chat_messages

TASK = "ai_task.rkllm_ai_task"
SNAPSHOT = b"\xff\xd8\xff\xe0 the porch camera"
PORCH = "camera.porch"


class _Porch(camera.Camera):
    """A camera whose snapshot is known."""

    _attr_name = "Porch"

    async def async_camera_image(self, width: int | None = None, height: int | None = None) -> bytes:
        return SNAPSHOT


@pytest.fixture
async def media(hass: HomeAssistant, tmp_path: Path) -> Path:
    """The local media folder, with a snapshot and a note in it."""
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "door.jpg").write_bytes(SNAPSHOT)
    (folder / "note.txt").write_text("a note")
    hass.config.media_dirs = {"local": str(folder)}
    assert await async_setup_component(hass, "media_source", {})
    return folder


@pytest.fixture
async def porch(hass: HomeAssistant) -> str:
    """A camera entity."""

    async def setup_platform(
        hass: HomeAssistant, config: Any, add_entities: AddEntitiesCallback, info: Any = None
    ) -> None:
        add_entities([_Porch()])

    mock_platform(hass, "test.camera", MockPlatform(async_setup_platform=setup_platform))
    assert await async_setup_component(hass, "camera", {"camera": {"platform": "test"}})
    await hass.async_block_till_done()
    return PORCH


def _media(name: str, kind: str) -> dict[str, str]:
    return {"media_content_id": f"media-source://media_source/local/{name}", "media_content_type": kind}


@pytest.fixture
def encoder(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """The entry's vision encoder file (indirect parameter False: none)."""
    if not getattr(request, "param", True):
        return None
    path = tmp_path / "vision_rk3588.rknn"
    path.write_bytes(b"RKNN encoder")
    return path


@pytest.fixture
def entry_data(entry_data: dict[str, Any], encoder: Path | None) -> dict[str, Any]:
    """The model entry, with its encoder."""
    return entry_data | ({CONF_ENCODER_FILE: str(encoder)} if encoder else {})


async def _ask(hass: HomeAssistant, *attachments: dict[str, str]) -> ai_task.GenDataTaskResult:
    return await ai_task.async_generate_data(
        hass,
        task_name="parcel",
        entity_id=TASK,
        instructions="Is there a parcel?",
        attachments=list(attachments),
    )


@pytest.mark.parametrize("encoder", [False], indirect=True)
async def test_a_model_without_an_encoder_offers_no_attachments(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path
) -> None:
    state = hass.states.get(TASK)
    assert state is not None
    assert not state.attributes["supported_features"] & ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS
    with pytest.raises(HomeAssistantError, match="does not support attachments"):
        await _ask(hass, _media("door.jpg", "image/jpeg"))


async def test_a_model_with_an_encoder_offers_attachments(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    state = hass.states.get(TASK)
    assert state is not None
    assert state.attributes["supported_features"] & ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS


async def test_attachments_that_are_not_images_are_refused_by_name(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path
) -> None:
    with pytest.raises(ServiceValidationError) as raised:
        await _ask(hass, _media("door.jpg", "image/jpeg"), _media("note.txt", "text/plain"))
    assert raised.value.translation_key == "unsupported_attachments"
    assert str(raised.value) == (
        "The model reads images only; these attachments are not images: "
        "media-source://media_source/local/note.txt"
    )
    # The text path is unaffected.
    assert (await ai_task.async_generate_data(hass, task_name="t", entity_id=TASK, instructions="Hi")).data


async def test_an_attachment_that_cannot_be_read_is_refused_by_name(hass: HomeAssistant, media: Path) -> None:
    """A file gone before the model reads it (a snapshot's temporary file, a deleted media file)."""
    gone = conversation.Attachment("media-source://camera/camera.porch", "image/jpeg", media / "gone.jpg")
    log = conversation.ChatLog(hass, "c1")
    log.async_add_user_content(conversation.UserContent("Is there a parcel?", attachments=[gone]))
    with pytest.raises(ServiceValidationError) as raised:
        await async_read_images(hass, log)
    assert raised.value.translation_key == "unreadable_attachment"
    assert raised.value.translation_placeholders == {
        "attachment": "media-source://camera/camera.porch",
        "error": "No such file or directory",
    }


async def test_the_new_turns_images_become_the_messages_images(
    hass: HomeAssistant, media: Path, porch: str
) -> None:
    """A camera snapshot and a media file, as Home Assistant resolves them, reach the engine's messages."""
    image = await camera.async_get_image(hass, porch)
    snapshot = media / "porch.jpg"
    snapshot.write_bytes(image.content)
    earlier = conversation.Attachment(
        "media-source://media_source/local/old.jpg", "image/jpeg", media / "gone.jpg"
    )
    log = conversation.ChatLog(hass, "c1")
    log.async_add_user_content(conversation.UserContent("What was that?", attachments=[earlier]))
    log.async_add_assistant_content_without_tools(conversation.AssistantContent("rkllm", "A cat."))
    door = conversation.Attachment(
        "media-source://media_source/local/door.jpg", "image/jpeg", media / "door.jpg"
    )
    cam = conversation.Attachment(f"media-source://camera/{porch}", "image/jpeg", snapshot)
    log.async_add_user_content(conversation.UserContent("And now?", attachments=[door, cam]))
    images = await async_read_images(hass, log)
    messages = chat_messages(log, images)
    assert [(m.role, m.content, m.images) for m in messages] == [
        ("user", "What was that?", ()),  # an earlier turn's file may be gone: quoted as text
        ("assistant", "A cat.", ()),
        ("user", "And now?", (SNAPSHOT, SNAPSHOT)),
    ]
