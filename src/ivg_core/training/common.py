"""Helpers shared by the training commands: data, model paths and outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .. import data
from ..data import require_column
from ..errors import DataError

__all__ = [
    "CONFIG_FILE",
    "load_records",
    "pair_records",
    "resolve_model_path",
    "write_config",
    "replace_folder",
]

CONFIG_FILE = "ivg-training.json"
POSITIVE_LABELS = {"1", "positive", "pos", "true", "yes"}
NEGATIVE_LABELS = {"0", "negative", "neg", "false", "no"}


def load_records(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Return records from a local file or ``hf:DATASET[:SPLIT]``."""
    return data.load_records(source, split)


def pair_records(records: list[dict], source: str) -> list[dict[str, str]]:
    """Return preference pairs with the columns prompt, chosen and rejected.

    Raises:
        DataError: a column is missing.
    """
    for column in ("prompt", "chosen", "rejected"):
        require_column(records, [column], source)
    return [
        {
            "prompt": str(r["prompt"]),
            "chosen": str(r["chosen"]),
            "rejected": str(r["rejected"]),
        }
        for r in records
    ]


def binary_label(value: Any, source: str, index: int) -> int:
    """Return 1 or 0 for a label such as ``Positive``, ``negative``, 1 or 0.

    Raises:
        DataError: the label is none of the known forms.
    """
    text = str(value).strip().lower()
    if text in POSITIVE_LABELS:
        return 1
    if text in NEGATIVE_LABELS:
        return 0
    raise DataError(
        f"{source}: record {index} has the label {value!r}; use 1/0, "
        "positive/negative or true/false"
    )


def resolve_model_path(name_or_path: str) -> str:
    """Return a path ``from_pretrained`` loads: embedded models are converted."""
    from ivg_plugins.embedded import EMBEDDED_MODELS, EmbeddedSource

    from ..specs import ModelRef

    if name_or_path in EMBEDDED_MODELS:
        ref = ModelRef(name_or_path=name_or_path, source="embedded")
        return EmbeddedSource().resolve(ref).path
    return name_or_path


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """Store the training configuration beside the checkpoint."""
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")


def replace_folder(staging: Path, target: Path) -> None:
    """Move a finished checkpoint into place, replacing an older one at once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
