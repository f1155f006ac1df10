"""Guidance specs of the sentiment task: one per preset and method.

Methods: ``base`` (plain sampling), ``bon`` (best-of-N scored by the implicit
value), ``eft`` (implicit value at the token level), ``cbs`` (chunk-level beam
search scored by the implicit value), ``eft+cbs`` (both) and ``ivg`` (implicit
value at the token level, explicit value at the chunk level).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

__all__ = ["METHODS", "PRESETS", "Preset", "method_spec"]

METHODS = ["base", "bon", "eft", "cbs", "eft+cbs", "ivg"]
BASE_TEMPLATE = "Here is a movie review from imdb: {prompt}"


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


def _hub(name: str, **fields: Any) -> dict[str, Any]:
    return {"name_or_path": name, **fields}


def _embedded(name: str, **fields: Any) -> dict[str, Any]:
    return {"name_or_path": name, "source": "embedded", **fields}


# The reference runs of the IVG paper: GPT-2 Large guided by a DPO pair and a
# token reward model trained on IMDB, scored by a DistilBERT classifier.
PAPER = Preset(
    base=_hub("openai-community/gpt2-large", template=BASE_TEMPLATE),
    tuned=_hub("chadlzx/gpt2-imdb-dpo"),
    untuned=_hub("lvwerra/gpt2-imdb"),
    explicit_value={
        "kind": "token_rm",
        "model": _hub("chadlzx/gpt2-imdb-token-rm"),
    },
    sampling={"max_new_tokens": 50, "temperature": 0.7, "seed": 0},
    beam_width=4,
    num_candidates=4,
    chunk_length=5,
    eft_weight=1.0,
    evaluator={
        "kind": "classifier",
        "model": _hub("lvwerra/distilbert-imdb"),
        "positive": "POSITIVE",
        "negative": "NEGATIVE",
    },
    prompts="hf:ZHZisZZ/imdb_preference:test",
)

# Offline: the same model as untuned (the base's own template) and as tuned
# (a template that asks for a positive review) forms a prompted pair; a
# second embedded model judges sentiment zero-shot; VADER is the golden reward.
# With the untuned model equal to the base, EFT at weight w samples from
# (1 − w)·ℓ_base + w·ℓ_tuned; w = 2 extrapolates past the tuned template, which
# moved VADER by about +0.29 on 64 IMDB prompts where w = 1 moved it by +0.01.
OFFLINE_MODEL = "smollm2-135m-instruct"
OFFLINE_JUDGE = "gemma-3-270m"
OFFLINE = Preset(
    base=_embedded(OFFLINE_MODEL, template=BASE_TEMPLATE),
    tuned=_embedded(
        OFFLINE_MODEL,
        template=(
            "Here is a glowing, enthusiastic movie review from imdb by a viewer "
            "who loved every minute: {prompt}"
        ),
    ),
    untuned=_embedded(OFFLINE_MODEL, template=BASE_TEMPLATE),
    explicit_value={
        "kind": "lm_judge",
        "model": _embedded(OFFLINE_JUDGE, template="Movie review: {prompt}"),
        "suffix": "\nIs this movie review positive or negative? The review is",
        "positive": " positive",
        "negative": " negative",
    },
    sampling={"max_new_tokens": 32, "temperature": 0.7, "seed": 0},
    beam_width=2,
    num_candidates=2,
    chunk_length=8,
    eft_weight=2.0,
    evaluator={"kind": "vader"},
    prompts="builtin",
)

PRESETS = {"offline": OFFLINE, "paper": PAPER}


def method_spec(preset: Preset, method: str) -> dict[str, Any]:
    """Return the guidance spec data of one method of a preset."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
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
