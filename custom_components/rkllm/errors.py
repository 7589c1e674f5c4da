"""Runtime errors as translated Home Assistant errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from homeassistant.exceptions import HomeAssistantError

from rkllm_runtime import BusyError, ClosedError, RKLLMError

from .const import DOMAIN


@contextmanager
def user_facing_errors() -> Iterator[None]:
    """Turn a failed generation into an error message the user can act on."""
    try:
        yield
    except BusyError as err:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="busy") from err
    except ClosedError as err:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="model_unloaded") from err
    except RKLLMError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="generation_failed",
            translation_placeholders={"error": str(err)},
        ) from err
