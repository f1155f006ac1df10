"""Token sampling with transformers' logits warpers and one generator per prompt."""

from __future__ import annotations

import hashlib

import torch
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .errors import GuidanceError
from .specs import SamplingSpec

__all__ = ["Sampler", "derive_seed"]


def derive_seed(run_seed: int, prompt_id: int | str) -> int:
    """Return the seed of one prompt's generator, from the run seed and its id.

    The seed depends on nothing else, so a prompt draws the same tokens
    whichever prompts share its batch. The id's type counts: 1 and "1" differ.
    """
    text = f"{run_seed}:{type(prompt_id).__name__}:{prompt_id}"
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def build_warpers(sampling: SamplingSpec) -> LogitsProcessorList:
    """Return temperature, top-k and top-p warpers, in the order generate uses."""
    warpers = LogitsProcessorList()
    if sampling.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k is not None:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    return warpers


class Sampler:
    """Draws the next token of every active row.

    Every step, each prompt that still has active rows draws one uniform number
    per row of its block from its own ``torch.Generator``; a row samples by
    inverting the cumulative distribution at its number. What a row draws thus
    depends only on its prompt's seed and history.
    """

    def __init__(self, sampling: SamplingSpec, seeds: list[int], rows_per_prompt: int):
        self.greedy = sampling.temperature == 0.0
        self.warpers = build_warpers(sampling) if not self.greedy else None
        self.rows_per_prompt = rows_per_prompt
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def sample(
        self, logits: torch.Tensor, rows: torch.Tensor, input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Return the next token of each row.

        Args:
            logits: guided logits of shape (rows, vocab).
            rows: global row index of each logits row, shape (rows,).
            input_ids: the response so far, shape (rows, length), for the warpers.

        Returns:
            token ids of shape (rows,).
        """
        if self.greedy:
            _check_rows_have_tokens(logits, rows)
            return logits.argmax(-1)
        scores = self.warpers(input_ids, logits)
        _check_rows_have_tokens(scores, rows)
        probs = torch.softmax(scores, dim=-1)
        cumulative = probs.cumsum(-1)
        uniforms = self._uniforms(rows).to(cumulative.device, cumulative.dtype)
        targets = uniforms * cumulative[:, -1]
        tokens = torch.searchsorted(cumulative, targets[:, None], right=True)
        return tokens.squeeze(-1).clamp(max=logits.shape[-1] - 1)

    def _uniforms(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.cpu()
        prompts, inverse = torch.unique(
            rows // self.rows_per_prompt, return_inverse=True
        )
        draws = torch.stack(
            [
                torch.rand(
                    self.rows_per_prompt,
                    generator=self.generators[prompt],
                    dtype=torch.float64,
                )
                for prompt in prompts.tolist()
            ]
        )
        return draws[inverse, rows % self.rows_per_prompt]


def _check_rows_have_tokens(scores: torch.Tensor, rows: torch.Tensor) -> None:
    # One max per row finds both problems: NaN propagates through max, and a
    # row whose maximum is -inf has no token left to sample.
    maxima = scores.max(dim=-1).values
    if torch.isnan(maxima).any():
        row = rows[torch.isnan(maxima).cpu()][0].item()
        raise GuidanceError(f"the guided logits of row {row} contain NaN")
    empty = (maxima == float("-inf")).cpu()
    if empty.any():
        row = rows[empty][0].item()
        raise GuidanceError(
            f"every token of row {row} has -inf logits after guidance and "
            "top-k/top-p filtering, so nothing can be sampled; check the guides "
            "that return -inf"
        )
