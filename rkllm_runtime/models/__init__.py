"""Getting a model: the catalog of known-good files, the board they must fit, and load checks.

Downloads are in :mod:`rkllm_runtime.models.download` (``huggingface_hub``: the ``server`` extra).
"""

from .board import Board, chip_of, detect_board, free_bytes
from .catalog import CatalogEntry, Choice, choices, load_catalog, lookup, parse_hf_name, reasons
from .check import check_model
from .header import ModelHeader, check_header, parse_header, series

__all__ = [
    "Board",
    "CatalogEntry",
    "Choice",
    "ModelHeader",
    "check_header",
    "check_model",
    "chip_of",
    "choices",
    "detect_board",
    "free_bytes",
    "load_catalog",
    "lookup",
    "parse_header",
    "parse_hf_name",
    "reasons",
    "series",
]
