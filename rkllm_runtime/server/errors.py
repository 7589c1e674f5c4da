"""Errors the HTTP APIs return, with their status."""

from __future__ import annotations

from rkllm_runtime.errors import (
    BusyError,
    ClosedError,
    ContextOverflowError,
    EncoderMismatchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidTextError,
    NoEncoderError,
    RKLLMError,
    TooManyImagesError,
)

# The request's own faults.
INVALID = (
    ContextOverflowError,
    InvalidTextError,
    NoEncoderError,
    InvalidImageError,
    ImageTooLargeError,
    TooManyImagesError,
)


class ApiError(Exception):
    """A request that gets an error response."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def bad_request(message: str) -> ApiError:
    """400: the request is not valid."""
    return ApiError(400, message)


def from_runtime(err: RKLLMError) -> ApiError:
    """The response for an engine error."""
    if isinstance(err, INVALID):
        return bad_request(str(err))
    if isinstance(err, EncoderMismatchError):  # the server's files, not the request, are at fault
        return ApiError(500, f"the model's vision encoder does not fit it: {err}")
    if isinstance(err, BusyError):
        return ApiError(429, f"{err}; try again shortly", retry_after=1)
    if isinstance(err, ClosedError):
        return ApiError(503, "the model is shutting down", retry_after=5)
    return ApiError(500, f"the model failed: {err}")
