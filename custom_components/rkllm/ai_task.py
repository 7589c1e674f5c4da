"""AI tasks (generate data, optionally structured) with the model on the NPU."""

from __future__ import annotations

# Structured output checks replies with jsonschema, which rkllm_runtime imports on first use: import it
# with this platform, in Home Assistant's import executor, never on the event loop.
import jsonschema  # noqa: F401
import probatio
from homeassistant.components import ai_task, conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from rkllm_runtime.chat import retry, structured

from .const import CONF_ENCODER_FILE, DOMAIN, LOGGER, SUBENTRY_AI_TASK
from .entity import RKLLMBaseLLMEntity, async_add_subentry_entities
from .runtime_data import RKLLMConfigEntry

# The engine queues requests itself.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: RKLLMConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one AI-task entity per AI-task subentry."""
    async_add_subentry_entities(entry, async_add_entities, SUBENTRY_AI_TASK, RKLLMTaskEntity)


class RKLLMTaskEntity(ai_task.AITaskEntity, RKLLMBaseLLMEntity):
    """Generates text or JSON data; about attached images when the model has a vision encoder."""

    def __init__(self, entry: RKLLMConfigEntry, subentry: ConfigSubentry) -> None:
        """Initialise; attachments are offered when the entry or its server has a vision encoder."""
        super().__init__(entry, subentry)
        features = ai_task.AITaskEntityFeature.GENERATE_DATA
        if entry.data.get(CONF_ENCODER_FILE) or entry.runtime_data.engine.status.reads_images:
            features |= ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS
        self._attr_supported_features = features

    async def _async_generate_data(
        self, task: ai_task.GenDataTask, chat_log: conversation.ChatLog
    ) -> ai_task.GenDataTaskResult:
        """Generate; with a structure, ask for JSON under its schema, validate it, and retry once."""
        if not task.structure:
            await self._async_handle_chat_log(chat_log)
            return ai_task.GenDataTaskResult(
                conversation_id=chat_log.conversation_id, data=_last_text(chat_log)
            )

        schema = probatio.to_openapi(task.structure, custom_serializer=llm.selector_serializer)
        suffix = structured.instruction(schema)
        error: structured.InvalidReplyError | None = None
        for _ in range(retry.ATTEMPTS):
            if error is not None:
                chat_log.async_add_user_content(conversation.UserContent(error.correction()))
            await self._async_handle_chat_log(chat_log, system_suffix=suffix, output_schema=schema)
            text = _last_text(chat_log)
            try:
                data = structured.parse_reply(text, schema)
            except structured.InvalidReplyError as err:
                error = err
                LOGGER.debug("Structured answer %r rejected: %s", text, err)
                continue
            return ai_task.GenDataTaskResult(conversation_id=chat_log.conversation_id, data=data)
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="invalid_structured_output",
            translation_placeholders={"error": str(error)},
        )


def _last_text(chat_log: conversation.ChatLog) -> str:
    content = chat_log.content[-1]
    if not isinstance(content, conversation.AssistantContent):
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="no_answer")
    return content.content or ""
