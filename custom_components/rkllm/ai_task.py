"""AI tasks with the model on the NPU: generate data (optionally structured), and evaluate."""

from __future__ import annotations

import json
from typing import Any

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
from rkllm_runtime.chat.evaluate import EvaluationRequest, Question, QuestionKind

from .const import CONF_ENCODER_FILE, DOMAIN, LOGGER, SUBENTRY_AI_TASK
from .entity import RKLLMBaseLLMEntity, async_add_subentry_entities
from .errors import user_facing_errors
from .runtime_data import RKLLMConfigEntry

# The engine queues requests itself.
PARALLEL_UPDATES = 0
# Evaluations (questions answered with probabilities) came with Home Assistant 2026.11; with an
# earlier release the entity generates data only. Their types are read from the release running.
EVALUATE = ai_task.AITaskEntityFeature.__members__.get("EVALUATE")
_AI_TASK: Any = ai_task
# Where it evaluates, the entity takes attachments so that it can name the ones it cannot read (an
# evaluation reads text); with a vision encoder it takes them anyway, for the data it generates.
FEATURES = ai_task.AITaskEntityFeature.GENERATE_DATA
if EVALUATE is not None:
    FEATURES |= EVALUATE | ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS


async def async_setup_entry(
    hass: HomeAssistant,
    entry: RKLLMConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one AI-task entity per AI-task subentry."""
    async_add_subentry_entities(entry, async_add_entities, SUBENTRY_AI_TASK, RKLLMTaskEntity)


class RKLLMTaskEntity(ai_task.AITaskEntity, RKLLMBaseLLMEntity):
    """Generates text or JSON data, about attached images too when the model reads them; evaluates."""

    def __init__(self, entry: RKLLMConfigEntry, subentry: ConfigSubentry) -> None:
        """Initialise; images are read when the entry or its server has a vision encoder."""
        super().__init__(entry, subentry)
        self._reads_images = (
            bool(entry.data.get(CONF_ENCODER_FILE)) or entry.runtime_data.engine.status.reads_images
        )
        self._attr_supported_features = FEATURES
        if self._reads_images:
            self._attr_supported_features |= ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS

    async def _async_generate_data(
        self, task: ai_task.GenDataTask, chat_log: conversation.ChatLog
    ) -> ai_task.GenDataTaskResult:
        """Generate; with a structure, ask for JSON under its schema, validate it, and retry once.

        A model that reads images gets the attached ones with the instructions (see :mod:`.attachments`).
        """
        if not self._reads_images:
            _refuse_attachments(task.attachments)
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

    async def _async_evaluate(self, task: Any) -> Any:
        """Answer each question from the logits of one prefill of it, the state prefilled once."""
        _refuse_attachments(task.attachments)
        state = task.state if isinstance(task.state, str) else json.dumps(task.state, ensure_ascii=False)
        request = EvaluationRequest(state, {key: _question(q) for key, q in task.questions.items()})
        with user_facing_errors():
            result = await self.entry.runtime_data.engine.evaluate(request)
        return _AI_TASK.EvaluationTaskResult(
            answers={key: _answer(task.questions[key], shares) for key, shares in result.answers.items()}
        )


def _refuse_attachments(attachments: list[conversation.Attachment] | None) -> None:
    """The model reads text: name the attachments it would leave out."""
    if attachments:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="attachments_unsupported",
            translation_placeholders={"attachments": ", ".join(a.media_content_id for a in attachments)},
        )


def _question(question: dict[str, Any]) -> Question:
    """A question of Home Assistant's evaluation task as the engine asks it."""
    kind = QuestionKind(question["type"])
    criteria = question.get("criteria", ())
    if kind is QuestionKind.CHOICE:
        criteria = criteria.items()
    elif kind is QuestionKind.SCORE:
        criteria = ((str(index), text) for index, text in enumerate(criteria))
    return Question(kind, question["instructions"], tuple(criteria))


def _answer(question: dict[str, Any], shares: dict[str, float]) -> Any:
    """Home Assistant's answer to a question from the probability of each of its answers."""
    match question["type"]:
        case QuestionKind.NOUL:
            return _AI_TASK.NoulAnswer(noul=shares["yes"])
        case QuestionKind.CHOICE:
            return _AI_TASK.ChoiceAnswer(choice=max(shares, key=shares.__getitem__), probabilities=shares)
    levels = list(shares.values())
    return _AI_TASK.ScoreAnswer(score=sum(i * p for i, p in enumerate(levels)), probabilities=levels)


def _last_text(chat_log: conversation.ChatLog) -> str:
    content = chat_log.content[-1]
    if not isinstance(content, conversation.AssistantContent):
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="no_answer")
    return content.content or ""
