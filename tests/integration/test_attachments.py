"""Attachments (camera snapshots, media files) as the images the model reads: AI task and conversation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components import ai_task, camera, conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import chat_session, llm
from homeassistant.helpers.entity_platform import AddEntitiesCallback
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockPlatform, mock_platform

from custom_components.rkllm.attachments import async_read_images
from custom_components.rkllm.const import CONF_ENCODER_FILE, CONF_MODE, DOMAIN, MODE_SERVER
from custom_components.rkllm.entity import chat_messages
from rkllm_runtime.emulator import EmulatedModel, Rule
from rkllm_runtime.vision.preprocess import MAX_IMAGE_BYTES
from tests.images import BLUE, RED, write_encoder
from tests.integration.conftest import IN_EVERY_MODE, RULES, SERVER_KEY, SERVER_MODEL
from tests.server.conftest import RunningServer, launch

TASK = "ai_task.rkllm_ai_task"
AGENT = "conversation.rkllm_conversation"
SNAPSHOT = RED
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
    (folder / "door.png").write_bytes(BLUE)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    (folder / "note.txt").write_text("a note")
    hass.config.media_dirs.clear()  # in place: a media source set up already reads this dict
    hass.config.media_dirs["local"] = str(folder)
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


@pytest.fixture(autouse=True)
def rk3588_figures_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKLLM_EMU_TIME_SCALE", "0")  # the runtimes report RK3588 times without sleeping


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """The test model, which also reads images of 16 tokens; named as the vendor names a Qwen3-VL file."""
    rules = [
        Rule(image="red", reply="A red car is in the driveway."),
        Rule(image="blue", reply="The door is {image}."),
        *RULES,
    ]
    model = EmulatedModel(rules=rules, image_tokens=16, name="qwen3-vl-2b-emulated")
    return model.write(tmp_path / "qwen3-vl-2b-instruct_w8a8_rk3588.rkllm")


@pytest.fixture
def encoder(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """The entry's vision encoder (indirect parameter: its fields; False: none)."""
    fields = getattr(request, "param", {})
    return None if fields is False else write_encoder(tmp_path, **fields)


@pytest.fixture
def entry_data(entry_data: dict[str, Any], encoder: Path | None) -> dict[str, Any]:
    """The model entry, with its encoder on this machine (a server's model has its own)."""
    if encoder is None or entry_data[CONF_MODE] == MODE_SERVER:
        return entry_data
    return entry_data | {CONF_ENCODER_FILE: str(encoder)}


@pytest.fixture
def rkllm_server(
    emulator_library: Path, model_path: Path, encoder: Path | None, tmp_path: Path
) -> Iterator[RunningServer]:
    """An rkllm-server process with the test model and its encoder, behind an API key."""
    server = launch(
        emulator_library,
        {SERVER_MODEL: model_path},
        ["--encoder", str(encoder)] if encoder else [],
        tmp_path / "rkllm-server.log",
        env={"RKLLM_SERVER_API_KEY": SERVER_KEY, "RKLLM_EMU_TIME_SCALE": "0"},
        api_key=SERVER_KEY,
    )
    yield server
    server.stop()
    server.close()


async def _ask(hass: HomeAssistant, *attachments: dict[str, str]) -> ai_task.GenDataTaskResult:
    return await ai_task.async_generate_data(
        hass,
        task_name="parcel",
        entity_id=TASK,
        instructions="Is there a parcel?",
        attachments=list(attachments),
    )


@IN_EVERY_MODE
@pytest.mark.parametrize("encoder", [False], indirect=True)
async def test_a_model_without_an_encoder_offers_no_attachments(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path
) -> None:
    state = hass.states.get(TASK)
    assert state is not None
    assert not state.attributes["supported_features"] & ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS
    with pytest.raises(HomeAssistantError, match="does not support attachments"):
        await _ask(hass, _media("door.png", "image/png"))


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
        await _ask(hass, _media("door.png", "image/png"), _media("note.txt", "text/plain"))
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
        "media-source://media_source/local/door.png", "image/png", media / "door.png"
    )
    cam = conversation.Attachment(f"media-source://camera/{porch}", "image/jpeg", snapshot)
    log.async_add_user_content(conversation.UserContent("And now?", attachments=[door, cam]))
    images = await async_read_images(hass, log)
    messages = chat_messages(log, images)
    assert [(m.role, m.content, m.images) for m in messages] == [
        ("user", "What was that?", ()),  # an earlier turn's file may be gone: quoted as text
        ("assistant", "A cat.", ()),
        ("user", "And now?", (BLUE, SNAPSHOT)),
    ]


@IN_EVERY_MODE
async def test_a_camera_snapshot_is_answered_about(
    hass: HomeAssistant, init_integration: MockConfigEntry, porch: str, media: Path
) -> None:
    result = await _ask(
        hass, {"media_content_id": f"media-source://camera/{porch}", "media_content_type": ""}
    )
    assert result.data == "A red car is in the driveway."
    result = await _ask(hass, _media("door.png", "image/png"))
    assert result.data == "The door is blue."
    # The text path is unaffected.
    assert (
        await ai_task.async_generate_data(hass, task_name="t", entity_id=TASK, instructions="Hi")
    ).data == ("Hello! How can I help?")


async def test_a_file_that_is_no_image_is_a_translated_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path
) -> None:
    with pytest.raises(ServiceValidationError, match="is not an image the model can read") as raised:
        await _ask(hass, _media("broken.jpg", "image/jpeg"))
    assert raised.value.translation_key == "invalid_image"
    assert (await ai_task.async_generate_data(hass, task_name="t", entity_id=TASK, instructions="Hi")).data


async def test_an_image_too_large_is_refused_unread(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path
) -> None:
    with (media / "huge.jpg").open("wb") as file:
        file.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(ServiceValidationError, match="The image is too large for the model") as raised:
        await _ask(hass, _media("huge.jpg", "image/jpeg"))
    assert raised.value.translation_key == "image_too_large"
    assert f"has {MAX_IMAGE_BYTES + 1} bytes" in str(raised.value)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        ({"target_platform": "RK3576"}, "converted for another chip"),
        ({"family": "minicpm-v"}, "is for minicpm-v models"),
    ],
    indirect=["encoder"],
    ids=["another-chip", "another-model"],
)
async def test_an_encoder_that_does_not_fit_is_a_translated_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path, message: str
) -> None:
    with pytest.raises(
        HomeAssistantError, match="The vision encoder does not fit this model or board"
    ) as raised:
        await _ask(hass, _media("door.png", "image/png"))
    assert raised.value.translation_key == "encoder_mismatch"
    assert message in str(raised.value)
    assert (await ai_task.async_generate_data(hass, task_name="t", entity_id=TASK, instructions="Hi")).data


async def test_more_images_than_the_model_takes_are_a_translated_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path, porch: str
) -> None:
    camera_attachment = {"media_content_id": f"media-source://camera/{porch}", "media_content_type": ""}
    with pytest.raises(ServiceValidationError, match="Too many images for this model") as raised:
        await _ask(hass, camera_attachment, _media("door.png", "image/png"))
    assert raised.value.translation_key == "too_many_images"
    assert "2 images in one request" in str(raised.value)


async def _converse_about(hass: HomeAssistant, attachment: conversation.Attachment) -> conversation.ChatLog:
    """A conversation turn whose chat log carries an attachment, answered by the agent."""
    agent = hass.data[conversation.DATA_COMPONENT].get_entity(AGENT)
    context = llm.LLMContext(DOMAIN, None, None, conversation.DOMAIN, None)
    with (
        chat_session.async_get_chat_session(hass) as session,
        conversation.async_get_chat_log(hass, session) as chat_log,
    ):
        await chat_log.async_provide_llm_data(context, None, None, None)
        chat_log.async_add_user_content(
            conversation.UserContent("Who is at the door?", attachments=[attachment])
        )
        await agent._async_handle_chat_log(chat_log)
        return chat_log


async def test_an_image_in_the_conversation_is_answered_about(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path
) -> None:
    door = conversation.Attachment(
        "media-source://media_source/local/door.png", "image/png", media / "door.png"
    )
    chat_log = await _converse_about(hass, door)
    answer = chat_log.content[-1]
    assert isinstance(answer, conversation.AssistantContent)
    assert answer.content == "The door is blue."


@pytest.mark.parametrize("encoder", [False], indirect=True)
async def test_a_model_without_an_encoder_answers_an_image_with_a_translated_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, media: Path
) -> None:
    door = conversation.Attachment(
        "media-source://media_source/local/door.png", "image/png", media / "door.png"
    )
    with pytest.raises(ServiceValidationError, match="This model cannot read images") as raised:
        await _converse_about(hass, door)
    assert raised.value.translation_key == "no_encoder"
    result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=AGENT)
    assert result.response.speech["plain"]["speech"] == "Hello! How can I help?"
