"""Model store: resolves model references and loads each model and tokenizer once."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .errors import ModelLoadError
from .extension import ResolvedModel
from .heads import load_head_model

if TYPE_CHECKING:
    from .registry import Registry
    from .specs import ModelRef

__all__ = ["ModelStore", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

OFFLINE_HINT = (
    "If this machine is offline, the Hugging Face Hub is unreachable: pass a "
    "local checkpoint folder as name_or_path, or use a model source or preset "
    "that works offline."
)


def resolve_device(device: str) -> torch.device:
    """Return the torch device for a spec value.

    'auto' is the CPU without CUDA; with CUDA it is the first GPU, or in a run
    of several processes each process's own GPU (``LOCAL_RANK``).
    """
    if device != "auto":
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Return the torch dtype for a spec value; 'auto' is bfloat16 on CUDA."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


class ModelStore:
    """Loads models and tokenizers through the registered model sources.

    A model used in several roles, or with several templates, is loaded once:
    models are keyed by their files, dtype, device and head, tokenizers by
    their files.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._resolved: dict[tuple, ResolvedModel] = {}
        self._tokenizers: dict[tuple, PreTrainedTokenizerBase] = {}
        self._models: dict[tuple, nn.Module] = {}

    def resolve(self, ref: ModelRef) -> ResolvedModel:
        """Return where a reference's files are, asking its model source once."""
        key = (ref.source, ref.name_or_path, ref.revision)
        if key not in self._resolved:
            source = self.registry.model_sources[ref.source]
            self._resolved[key] = source.resolve(ref)
        return self._resolved[key]

    def tokenizer(self, ref: ModelRef) -> PreTrainedTokenizerBase:
        """Return the tokenizer of a model reference, loading it on first use.

        Raises:
            ModelLoadError: the tokenizer could not be found or loaded.
        """
        resolved = self.resolve(ref)
        key = _files_key(resolved)
        if key not in self._tokenizers:
            self._tokenizers[key] = _load(
                "tokenizer",
                ref,
                resolved,
                lambda: AutoTokenizer.from_pretrained(
                    resolved.path, **_file_kwargs(resolved)
                ),
            )
        return self._tokenizers[key]

    def model(self, ref: ModelRef, head: str = "causal_lm") -> nn.Module:
        """Return the model of a reference with the given head, loading it once.

        Raises:
            ModelLoadError: the model could not be found or loaded.
        """
        resolved = self.resolve(ref)
        device = resolve_device(ref.device)
        dtype = resolve_dtype(ref.dtype, device)
        key = (*_files_key(resolved), str(dtype), str(device), ref.device_map, head)
        if key not in self._models:
            logger.info(
                "loading %s (%s, %s, %s)", ref.name_or_path, head, dtype, device
            )
            self._models[key] = _load(
                "model",
                ref,
                resolved,
                lambda: load_head_model(resolved, head, dtype, device, ref.device_map),
            )
        return self._models[key]


def _files_key(resolved: ResolvedModel) -> tuple:
    return (resolved.path, resolved.revision, resolved.gguf_file)


def _file_kwargs(resolved: ResolvedModel) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if resolved.revision is not None:
        kwargs["revision"] = resolved.revision
    if resolved.gguf_file is not None:
        kwargs["gguf_file"] = resolved.gguf_file
    return kwargs


def _load(what: str, ref: ModelRef, resolved: ResolvedModel, load: Any) -> Any:
    try:
        return load()
    except ModelLoadError:
        raise
    except Exception as error:  # loaders raise many types for bad files
        reason = str(error).strip().rstrip(".")
        hint = "" if Path(resolved.path).is_dir() else f" {OFFLINE_HINT}"
        raise ModelLoadError(
            f"could not load the {what} of {ref.name_or_path!r} (source "
            f"{ref.source!r}): {type(error).__name__}: {reason}.{hint}"
        ) from error
