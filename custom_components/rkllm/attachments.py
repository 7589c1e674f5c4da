"""Attachments of a chat log (camera snapshots, image entities, media files) as the images the model reads.

Home Assistant resolves each attachment to a file with a MIME type; the files of the turn being
answered are read in the executor. Earlier turns are quoted as text: their files may be gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from homeassistant.components import conversation
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError

from rkllm_runtime.vision.preprocess import MAX_IMAGE_BYTES

from .const import DOMAIN


def new_attachments(content: Sequence[conversation.Content]) -> list[conversation.Attachment]:
    """The attachments of the user messages after the last assistant message."""
    attachments: list[conversation.Attachment] = []
    for item in content:
        if isinstance(item, conversation.AssistantContent):
            attachments = []
        elif isinstance(item, conversation.UserContent):
            attachments += item.attachments or ()
    return attachments


def _check_images(attachments: Iterable[conversation.Attachment]) -> None:
    if refused := [a.media_content_id for a in attachments if not a.mime_type.startswith("image/")]:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="unsupported_attachments",
            translation_placeholders={"attachments": ", ".join(refused)},
        )


def _read(attachments: list[conversation.Attachment]) -> dict[Path, bytes]:
    images: dict[Path, bytes] = {}
    for attachment in attachments:
        try:
            if (size := attachment.path.stat().st_size) > MAX_IMAGE_BYTES:  # never read into memory
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key="image_too_large",
                    translation_placeholders={
                        "error": f"{attachment.media_content_id} has {size} bytes, "
                        f"at most {MAX_IMAGE_BYTES} are accepted"
                    },
                )
            images[attachment.path] = attachment.path.read_bytes()
        except OSError as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="unreadable_attachment",
                translation_placeholders={
                    "attachment": attachment.media_content_id,
                    "error": err.strerror or str(err),
                },
            ) from err
    return images


async def async_read_attachments(
    hass: HomeAssistant, attachments: list[conversation.Attachment]
) -> dict[Path, bytes]:
    """Image attachments read in the executor, by path; anything but an image is refused by name.

    What a task that takes attachments without a chat log (an evaluation) reads them with.
    """
    _check_images(attachments)
    if not attachments:
        return {}
    return await hass.async_add_executor_job(_read, attachments)


async def async_read_images(hass: HomeAssistant, chat_log: conversation.ChatLog) -> dict[Path, bytes]:
    """The images attached to the turn being answered, by path."""
    return await async_read_attachments(hass, new_attachments(chat_log.content))
