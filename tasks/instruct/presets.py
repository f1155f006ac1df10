"""Presets of the instruction-following task.

The ``paper-*`` presets reproduce the reference runs: a chat model as base,
guided by the Tulu 2 pair (``allenai/tulu-2-dpo-7b`` against
``allenai/tulu-2-7b``) or the UltraFeedback pair
(``chadlzx/llama-ultrafeedback-dpo`` against ``meta-llama/Llama-2-7b-hf``),
with the UltraFeedback token reward model as explicit value. Bases whose
vocabulary differs from Llama 2's (Mistral, Mixtral) offer only the methods
without token-level guidance. Guide templates end without a space, because
the base's first response token carries its own leading space.
"""

from __future__ import annotations

from ..presets import CHUNK_METHODS, METHODS, Preset
from ..presets import embedded_model as _embedded
from ..presets import hub_model as _hub

__all__ = ["BASES", "GUIDES", "PRESETS"]

TULU_TEMPLATE = "<|user|>\n{prompt}\n<|assistant|>\n"
ULTRA_TEMPLATE = "[INST] {prompt} [/INST]"
TOKEN_RM_TEMPLATE = "\n\nHuman: {prompt}\n\nAssistant:"
TOKEN_RM = {
    "kind": "token_rm",
    "model": _hub("chadlzx/llama-ultrafeedback-token-rm", template=TOKEN_RM_TEMPLATE),
}
SAMPLING = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 1024, "seed": 0}

# Base models of the reference runs, and whether they share Llama 2's vocabulary.
BASES = {
    "llama2-7b": ("meta-llama/Llama-2-7b-chat-hf", True),
    "llama2-70b": ("meta-llama/Llama-2-70b-chat-hf", True),
    "mistral-7b": ("mistralai/Mistral-7B-Instruct-v0.2", False),
    "mixtral-8x7b": ("mistralai/Mixtral-8x7B-Instruct-v0.1", False),
}
GUIDES = {
    "tulu": (
        _hub("allenai/tulu-2-dpo-7b", template=TULU_TEMPLATE),
        _hub("allenai/tulu-2-7b", template=TULU_TEMPLATE),
    ),
    "ultra": (
        _hub("chadlzx/llama-ultrafeedback-dpo", template=ULTRA_TEMPLATE),
        _hub("meta-llama/Llama-2-7b-hf", template=ULTRA_TEMPLATE),
    ),
}


def paper_preset(guide: str, base: str) -> Preset:
    """Return the reference preset of one guide pair on one base model."""
    base_id, llama_vocabulary = BASES[base]
    tuned, untuned = GUIDES[guide]
    return Preset(
        base=_hub(base_id, chat=True),
        tuned=tuned,
        untuned=untuned,
        explicit_value=TOKEN_RM,
        sampling=SAMPLING,
        beam_width=2,
        num_candidates=2,
        chunk_length=30,
        eft_weight=1.0,
        evaluator={"kind": "words"},
        prompts="hf:tatsu-lab/alpaca_eval:eval",
        methods=METHODS if llama_vocabulary else CHUNK_METHODS,
        batch_size=4,
    )


# Offline: SmolLM2-135M-Instruct in its chat format as base and untuned model;
# with a system message that asks for careful, complete answers as the tuned
# half of a prompted pair; Gemma 3 270M as a zero-shot judge. Without a
# reward model offline, the golden score is ROUGE-L against the reference
# answer of each prompt (UltraFeedback's chosen answer, or AlpacaEval's
# example output), reported with the answer length.
OFFLINE_MODEL = "smollm2-135m-instruct"
OFFLINE = Preset(
    base=_embedded(OFFLINE_MODEL, chat=True),
    tuned=_embedded(
        OFFLINE_MODEL,
        chat=True,
        system=(
            "You are a careful, knowledgeable assistant. Answer the request "
            "directly, correctly and completely, in clear sentences."
        ),
    ),
    untuned=_embedded(OFFLINE_MODEL, chat=True),
    explicit_value={
        "kind": "lm_judge",
        "model": _embedded("gemma-3-270m", template="Question: {prompt}\nAnswer:"),
        "suffix": "\nIs this answer helpful and correct? Answer:",
        "positive": " Yes",
        "negative": " No",
    },
    sampling={"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64, "seed": 0},
    beam_width=2,
    num_candidates=2,
    chunk_length=16,
    eft_weight=1.0,
    evaluator={"kind": "rouge_l"},
    prompts="",
    batch_size=8,
)

PRESETS = {"offline": OFFLINE} | {
    f"paper-{guide}-{base}": paper_preset(guide, base)
    for guide in GUIDES
    for base in BASES
}
