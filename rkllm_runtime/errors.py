"""Exceptions raised by the binding: one family for loading, one for running."""

from enum import StrEnum


class RKLLMError(Exception):
    """Base class of every error raised by ``rkllm_runtime``."""


class LibraryError(RKLLMError):
    """``librkllmrt.so`` cannot be used."""


class LibraryNotFoundError(LibraryError):
    """No file at the library path."""


class NotALibraryError(LibraryError):
    """The file is not an ELF shared library."""


class WrongArchitectureError(LibraryError):
    """The library was built for another CPU architecture than this machine's."""

    def __init__(self, message: str, *, found: str, expected: str) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected


class UnsupportedVersionError(LibraryError):
    """The runtime release has an ABI this binding does not speak."""

    def __init__(self, message: str, *, found: str | None) -> None:
        super().__init__(message)
        self.found = found


class VersionMismatchError(LibraryError):
    """The configured runtime release disagrees with the one the library embeds."""

    def __init__(self, message: str, *, embedded: str, configured: str) -> None:
        super().__init__(message)
        self.embedded = embedded
        self.configured = configured


class ModelError(RKLLMError):
    """The model cannot be loaded."""


class ModelNotFoundError(ModelError):
    """No file at the model path."""


class ModelRejectedError(ModelError):
    """``rkllm_init`` refused the model (corrupt file, wrong platform, too large a context...)."""


class NotAModelError(ModelRejectedError):
    """The file is no model the runtime can read: empty, a folder, another format, or cut short."""


class InsufficientMemoryError(ModelError):
    """Not enough free memory to load the model."""


class ModelIncompatibleError(ModelError):
    """The model file's header says it needs another chip or runtime release than this board's."""

    def __init__(self, message: str, *, needs: str) -> None:
        super().__init__(message)
        self.needs = needs
        """What the file needs, e.g. ``runtime 1.1.x`` or ``an RK3576``."""


class ModelCrashedError(ModelError):
    """The runtime crashed while loading the model (checked in a process of its own)."""


class DownloadError(RKLLMError):
    """A model could not be downloaded."""


class DownloadCancelledError(DownloadError):
    """The download was cancelled."""


class ChecksumMismatchError(DownloadError):
    """The downloaded file's SHA-256 is not the one the hub announced."""

    def __init__(self, message: str, *, expected: str, found: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class InsufficientDiskError(DownloadError):
    """Not enough free disk space for the model."""

    def __init__(self, message: str, *, needed: int, free: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free


class RunError(RKLLMError):
    """A run failed (``rkllm_run`` returned -1 or the callback reported ERROR)."""


class AbortedError(RunError):
    """The run was aborted with :meth:`RKLLMRuntime.abort`."""


class ContextOverflowError(RunError):
    """The input cannot fit in the model's context."""

    def __init__(self, message: str, *, tokens: int, limit: int) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit


class InvalidTextError(RKLLMError):
    """A text cannot be handed to the runtime as a C string (a NUL character, an unpaired surrogate)."""


class ClosedError(RKLLMError):
    """The runtime was closed."""


class BusyError(RKLLMError):
    """Too many requests are already waiting for the model."""


class RemoteError(RKLLMError):
    """An rkllm-server refused a request."""


class ServerUnavailableError(RemoteError):
    """The server cannot be reached, went away mid-answer, or has no engine for the model now."""


class ServerStoppedError(ServerUnavailableError):
    """The server was stopped while it answered."""


class AuthenticationError(RemoteError):
    """The server did not accept the API key."""


class UnknownModelError(RemoteError):
    """The server does not serve this model."""


class KVCacheError(RKLLMError):
    """The runtime refused to clear or measure the KV cache."""


class PromptCacheError(RKLLMError):
    """The runtime refused to load or release a prompt-cache file."""


class ErrorKind(StrEnum):
    """What went wrong with a request, in every mode alike (most specific first)."""

    CONTEXT_OVERFLOW = "context_overflow"
    INVALID_TEXT = "invalid_text"
    BUSY = "busy"
    ABORTED = "aborted"
    CLOSED = "closed"
    SERVER_STOPPED = "server_stopped"
    UNAVAILABLE = "unavailable"
    AUTHENTICATION = "authentication"
    UNKNOWN_MODEL = "unknown_model"
    RUN = "run"
    """The runtime failed: the model's fault, shown on its state sensor."""


ERRORS: dict[ErrorKind, type[RKLLMError]] = {
    ErrorKind.CONTEXT_OVERFLOW: ContextOverflowError,
    ErrorKind.INVALID_TEXT: InvalidTextError,
    ErrorKind.BUSY: BusyError,
    ErrorKind.ABORTED: AbortedError,
    ErrorKind.CLOSED: ClosedError,
    ErrorKind.SERVER_STOPPED: ServerStoppedError,
    ErrorKind.UNAVAILABLE: ServerUnavailableError,
    ErrorKind.AUTHENTICATION: AuthenticationError,
    ErrorKind.UNKNOWN_MODEL: UnknownModelError,
    ErrorKind.RUN: RunError,
}


def error_kind(err: RKLLMError) -> ErrorKind:
    """The kind of an error (an unknown one is a failed run)."""
    return next((kind for kind, cls in ERRORS.items() if isinstance(err, cls)), ErrorKind.RUN)
