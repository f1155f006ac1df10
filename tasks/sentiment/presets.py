"""Presets of the sentiment task: the reference runs and an offline setup."""

from __future__ import annotations

from ..presets import Preset
from ..presets import embedded_model as _embedded
from ..presets import hub_model as _hub

__all__ = ["PRESETS"]

BASE_TEMPLATE = "Here is a movie review from imdb: {prompt}"


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
