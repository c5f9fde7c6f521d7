"""Every weights file archspec reads or writes (`formats`: `.safetensors`, PyTorch state dicts,
`.npz`, read without executing code), whether a state dict fits a spec (`fit`), and the importer
of foreign checkpoints (`importer`: torchvision's, timm's, mapped onto the spec's keys)."""

from .fit import (
    WeightsMatch,
    as_state,
    check_weights,
    expected_tensors,
    file_limit,
    fit_problems,
    load_into,
    match_weights,
    sidecar_note,
)
from .formats import WeightsError, read_metadata, read_weights, save_weights, write_weights
from .importer import ImportMap, ImportResult, import_checkpoint, read_map

__all__ = ["ImportMap", "ImportResult", "WeightsError", "WeightsMatch", "as_state", "check_weights", "expected_tensors",
           "file_limit", "fit_problems", "import_checkpoint", "load_into", "match_weights", "read_map", "read_metadata",
           "read_weights", "save_weights", "sidecar_note", "write_weights"]
