"""A request's images, read by the model's vision encoder before its run.

The encoder is loaded with the first image, on the engine thread (as every runtime call),
and stays loaded beside the model. Pillow and the RKNN runtime are needed from then on only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rkllm_runtime.errors import EncoderMismatchError, NoEncoderError, TooManyImagesError
from rkllm_runtime.runtime import RKLLMRuntime
from rkllm_runtime.types import ImageEmbedding, ImageTags, MultiModal, Prompt
from rkllm_runtime.vision import family_named, find_rknn_library

if TYPE_CHECKING:
    from rkllm_runtime.vision.encoder import VisionEncoder


@dataclass(frozen=True, slots=True)
class EncodedImages:
    """A request's images, as the model reads them."""

    embeddings: Sequence[ImageEmbedding]
    tags: ImageTags
    """The model family's image tags."""
    encode_ms: float
    """The encoder's own time for all of them."""

    @property
    def tokens(self) -> int:
        """Context tokens the images take."""
        return sum(embedding.n_tokens for embedding in self.embeddings)

    def input(self, prompt: Prompt | MultiModal) -> MultiModal:
        """A plan's prompt, its placeholders taking the images."""
        return MultiModal(prompt.text, self.embeddings, self.tags, prompt.role, prompt.enable_thinking)


class ImageReader:
    """The model's vision encoder, loaded with the first image (every call on the engine thread)."""

    def __init__(self, runtime: RKLLMRuntime, encoder_path: Path | None) -> None:
        self.runtime = runtime
        self.encoder_path = encoder_path
        """The model's vision encoder (``.rknn``), None for a text-only model."""
        self.encoder: VisionEncoder | None = None
        """Once the first image has loaded it."""

    def check(self, images: Sequence[bytes]) -> None:
        """Refuse images for a model without an encoder, before queueing (any thread)."""
        if images and self.encoder_path is None:
            raise NoEncoderError(
                f"{self.runtime.model_path.name} has no vision encoder: it cannot read images"
            )

    def read(self, images: Sequence[bytes]) -> EncodedImages:
        """Encode a request's images, loading the encoder first."""
        encoder = self.encoder or self._open()
        family = encoder.info.family
        if len(images) > family.max_images:
            raise TooManyImagesError(
                f"{len(images)} images in one request; "
                f"a {family.name} model reads {family.max_images} at a time"
            )
        embeddings, encode_ms = [], 0.0
        for image in images:
            embeddings.append(encoder.encode(image))
            encode_ms += encoder.last_run_ms
        return EncodedImages(embeddings, family.tags, encode_ms)

    def _open(self) -> VisionEncoder:
        """Load the encoder on the RKNN runtime beside the RKLLM one; refuse one of another model."""
        # Pillow is needed by image turns only (the vision extra)
        from rkllm_runtime.vision.encoder import VisionEncoder  # noqa: PLC0415

        assert self.encoder_path is not None
        encoder = VisionEncoder.open(find_rknn_library(self.runtime.library.path), self.encoder_path)
        model = family_named(self.runtime.model_path.name)
        if model is not None and model.name != encoder.info.family.name:
            encoder.close()
            raise EncoderMismatchError(
                f"the vision encoder {self.encoder_path.name} is for {encoder.info.family.name} models, "
                f"not for {self.runtime.model_path.name}"
            )
        self.encoder = encoder
        return encoder

    @property
    def memory_mb(self) -> float:
        """The loaded encoder's memory (0 before it is loaded)."""
        return self.encoder.info.memory_mb if self.encoder is not None else 0.0

    def close(self) -> None:
        """Free the encoder's context."""
        if self.encoder is not None:
            self.encoder.close()
