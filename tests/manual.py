"""Computations from scratch, without the decoder, that tests compare against."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2Model


def load_lm(folder: Path) -> AutoModelForCausalLM:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()


def load_tokenizer(folder: Path):
    return AutoTokenizer.from_pretrained(folder)


def prompt_ids(folder: Path, template: str, prompt: str) -> list[int]:
    """Return the ids of a rendered template; an empty one starts from BOS or EOS."""
    tokenizer = load_tokenizer(folder)
    ids = list(tokenizer(template.replace("{prompt}", prompt))["input_ids"])
    if ids:
        return ids
    start = tokenizer.bos_token_id
    return [start if start is not None else tokenizer.eos_token_id]


@torch.no_grad()
def next_logits(model, ids: list[int]) -> torch.Tensor:
    """Return the logits after the last of ``ids``, one unpadded forward pass."""
    output = model(input_ids=torch.tensor([ids]))
    return output.logits[0, -1]


@torch.no_grad()
def sequence_log_prob(model, context: list[int], response: list[int]) -> float:
    """Return log p(response | context) summed over the response tokens."""
    ids = torch.tensor([context + response])
    logits = model(input_ids=ids).logits[0].double()
    log_probs = torch.log_softmax(logits, -1)
    positions = range(len(context) - 1, len(context) + len(response) - 1)
    return float(sum(log_probs[p, t] for p, t in zip(positions, response, strict=True)))


def load_token_rm(folder: Path) -> tuple[GPT2Model, torch.Tensor]:
    """Load a GPT-2 token reward model by hand: backbone and head weight."""
    state = load_file(str(folder / "model.safetensors"))
    head = state.pop("score_head.weight").double()
    backbone = GPT2Model(GPT2Config.from_pretrained(folder))
    backbone.load_state_dict(
        {k.removeprefix("transformer."): v for k, v in state.items()}
    )
    return backbone.double().eval(), head


@torch.no_grad()
def token_rm_q(backbone, head: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Return Q(s, ·) after the last of ``ids``, shape (vocab,)."""
    hidden = backbone(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    return head @ hidden
