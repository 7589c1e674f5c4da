"""Engine errors as translated Home Assistant errors, the same in every mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from homeassistant.exceptions import HomeAssistantError, ServiceValidationError

from rkllm_runtime import ContextOverflowError, RKLLMError
from rkllm_runtime.errors import ErrorKind, error_kind

from .const import DOMAIN, LOGGER

# Translation keys of the errors; the request's own faults are validation errors.
TRANSLATION_KEYS = {
    ErrorKind.CONTEXT_OVERFLOW: "prompt_too_long",
    ErrorKind.INVALID_TEXT: "invalid_text",
    ErrorKind.BUSY: "busy",
    ErrorKind.ABORTED: "cancelled",
    ErrorKind.CLOSED: "model_unloaded",
    ErrorKind.SERVER_STOPPED: "server_stopped",
    ErrorKind.UNAVAILABLE: "engine_unavailable",
    ErrorKind.AUTHENTICATION: "invalid_auth",
    ErrorKind.UNKNOWN_MODEL: "unknown_model",
    ErrorKind.RUN: "generation_failed",
}
VALIDATION = frozenset({ErrorKind.CONTEXT_OVERFLOW, ErrorKind.INVALID_TEXT})
# Said in words; what the connection reported goes to the log.
LOGGED = frozenset({ErrorKind.SERVER_STOPPED, ErrorKind.UNAVAILABLE})


def _placeholders(err: RKLLMError, kind: ErrorKind) -> dict[str, str] | None:
    if isinstance(err, ContextOverflowError):
        return {"tokens": str(err.tokens), "limit": str(err.limit)}
    if kind in (ErrorKind.INVALID_TEXT, ErrorKind.UNKNOWN_MODEL, ErrorKind.RUN):
        return {"error": str(err)}
    return None


@contextmanager
def user_facing_errors() -> Iterator[None]:
    """Turn a failed generation into an error message the user can act on."""
    try:
        yield
    except RKLLMError as err:
        kind = error_kind(err)
        if kind in LOGGED:
            LOGGER.warning("The model could not answer: %s", err)
        cls = ServiceValidationError if kind in VALIDATION else HomeAssistantError
        raise cls(
            translation_domain=DOMAIN,
            translation_key=TRANSLATION_KEYS[kind],
            translation_placeholders=_placeholders(err, kind),
        ) from err
