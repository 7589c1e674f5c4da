"""The parameters of ``rkllm_init``: the runtime's own defaults with a model's changes."""

from __future__ import annotations

import ctypes
from pathlib import Path

from .abi.common import field_values
from .run_input import chosen, encode_text
from .types import ModelParams


def build_param(
    param: ctypes.Structure, model_path: Path, params: ModelParams, per_input_image_tags: bool
) -> tuple[ctypes.Structure, list[bytes]]:
    """``param`` (``rkllm_createDefaultParam()``'s) with ``params`` applied, and the bytes it points to.

    Always changed: ``model_path``; ``max_context_len`` (the default 512 is too small for a
    chat); ``skip_special_token`` on (template tokens such as ``<|im_end|>`` must not reach
    the text); ``is_async`` off (the binding runs ``rkllm_run`` on its own thread, and the
    asynchronous mode was broken before 1.2.2). Everything else only when set. The returned
    bytes must live as long as the handle.
    """
    p = params
    kept = [str(model_path).encode()]
    param.model_path = kept[0]
    param.max_context_len = p.max_context_len
    param.skip_special_token = True
    param.is_async = False
    if p.max_new_tokens is not None:
        param.max_new_tokens = p.max_new_tokens
    if p.n_keep is not None:
        param.n_keep = p.n_keep
    if p.sampling is not None:
        for name, value in chosen(p.sampling).items():
            setattr(param, name, value)
    if p.base_domain_id is not None:
        param.extend_param.base_domain_id = p.base_domain_id
    if p.embed_flash is not None:
        param.extend_param.embed_flash = int(p.embed_flash)
    if p.enabled_cpus_mask is not None:
        param.extend_param.enabled_cpus_mask = p.enabled_cpus_mask
        param.extend_param.enabled_cpus_num = bin(p.enabled_cpus_mask).count("1")
    if p.image_tags is not None and not per_input_image_tags:
        tags = [encode_text(tag) for tag in (p.image_tags.start, p.image_tags.end, p.image_tags.content)]
        param.img_start, param.img_end, param.img_content = tags
        kept += tags
    return param, kept


def param_values(struct: ctypes.Structure) -> dict[str, object]:
    """The numbers and flags of an ``RKLLMParam`` (nested structs flattened), floats to four places."""
    return {
        name: round(value, 4) if isinstance(value, float) else value
        for name, value in field_values(struct).items()
    }
