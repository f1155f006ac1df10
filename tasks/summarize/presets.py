"""Presets of the summarization task: the reference runs and an offline setup.

Every template ends with ``TL;DR:`` and no space: the models continue with a
token that starts with a space, so a template ending in a space would put two
spaces before the summary.
"""

from __future__ import annotations

from importlib.resources import files

from ..presets import Preset
from ..presets import embedded_model as _embedded
from ..presets import hub_model as _hub

__all__ = ["EXAMPLES", "GUIDE_TEMPLATE", "PRESETS", "base_template"]

GUIDE_TEMPLATE = "{prompt}\nTL;DR:"
EXAMPLES = files(__package__).joinpath("examples.txt").read_text(encoding="utf-8")


def base_template() -> str:
    """Return the base template: two worked examples, then the post."""
    return EXAMPLES + GUIDE_TEMPLATE


SAMPLING = {"temperature": 0.7, "stop_strings": ["\n"], "seed": 0}

# The reference runs of the IVG paper: GPT-2 Large guided by a DPO pair and a
# token reward model trained on TL;DR comparisons, scored by a Llama reward
# model at the EOS token after the summary.
PAPER = Preset(
    base=_hub("openai-community/gpt2-large", template=base_template()),
    tuned=_hub("chadlzx/gpt2-summarize-dpo", template=GUIDE_TEMPLATE),
    untuned=_hub("chadlzx/gpt2-summarize", template=GUIDE_TEMPLATE),
    explicit_value={
        "kind": "token_rm",
        "model": _hub("chadlzx/gpt2-summarize-token-rm", template=GUIDE_TEMPLATE),
    },
    sampling={**SAMPLING, "max_new_tokens": 128},
    beam_width=4,
    num_candidates=4,
    chunk_length=5,
    eft_weight=1.0,
    evaluator={
        "kind": "sequence_rm",
        "model": _hub("chadlzx/golden_rm_summarize", template=GUIDE_TEMPLATE),
        "append_eos": True,
    },
    prompts="hf:chadlzx/openai_summarize_comparisons_relabel:test",
    batch_size=4,
)

# Offline: SmolLM2 reads the post without worked examples, because it is
# instruction tuned and the examples would double the prompt, whose prefill
# dominates the cost on a CPU. The same model with an instruction to
# summarize briefly and accurately is the tuned half of a prompted pair, the
# base is its untuned half. Gemma 3 270M judges the summary zero-shot, and
# the golden reward is ROUGE-L against the human summary.
OFFLINE_MODEL = "smollm2-135m-instruct"
OFFLINE = Preset(
    base=_embedded(OFFLINE_MODEL, template=GUIDE_TEMPLATE),
    tuned=_embedded(
        OFFLINE_MODEL,
        template=(
            "Summarize the Reddit post below in one short sentence that keeps "
            "its main question or point.\n\n" + GUIDE_TEMPLATE
        ),
    ),
    untuned=_embedded(OFFLINE_MODEL, template=GUIDE_TEMPLATE),
    explicit_value={
        "kind": "lm_judge",
        "model": _embedded("gemma-3-270m", template=GUIDE_TEMPLATE),
        "suffix": "\nIs this TL;DR an accurate summary of the post? Answer:",
        "positive": " Yes",
        "negative": " No",
    },
    sampling={**SAMPLING, "max_new_tokens": 48},
    beam_width=2,
    num_candidates=2,
    chunk_length=8,
    eft_weight=1.0,
    evaluator={"kind": "rouge_l"},
    prompts="",
    batch_size=4,
)

PRESETS = {"offline": OFFLINE, "paper": PAPER}
