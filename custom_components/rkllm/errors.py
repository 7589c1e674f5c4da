"""Runtime errors as translated Home Assistant errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from homeassistant.exceptions import HomeAssistantError, ServiceValidationError

from rkllm_runtime import (
    AbortedError,
    BusyError,
    ClosedError,
    ContextOverflowError,
    InvalidTextError,
    RKLLMError,
)
from rkllm_runtime.client import AuthenticationError, ServerUnavailableError

from .const import DOMAIN


@contextmanager
def user_facing_errors() -> Iterator[None]:
    """Turn a failed generation into an error message the user can act on."""
    try:
        yield
    except BusyError as err:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="busy") from err
    except ServerUnavailableError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="engine_unavailable",
            translation_placeholders={"error": str(err)},
        ) from err
    except AuthenticationError as err:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="invalid_auth") from err
    except ClosedError as err:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="model_unloaded") from err
    except AbortedError as err:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="cancelled") from err
    except ContextOverflowError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="prompt_too_long",
            translation_placeholders={"tokens": str(err.tokens), "limit": str(err.limit)},
        ) from err
    except InvalidTextError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_text",
            translation_placeholders={"error": str(err)},
        ) from err
    except RKLLMError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="generation_failed",
            translation_placeholders={"error": str(err)},
        ) from err
