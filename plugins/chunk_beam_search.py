"""Chunk-level beam search (CBS), with best-of-N and plain sampling as special cases.

CBS keeps ``beam_width`` (W) hypotheses per prompt. From each it samples
``num_candidates`` (K) continuations of ``chunk_length`` (L) tokens, scores
the W·K partial responses with the chunk scorers and keeps the top W, until
every kept hypothesis has ended (Zhou et al., "Weak-to-Strong Search", arXiv
2405.19262). Best-of-N is W=1, K=N, L=None; plain sampling is W=K=1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from ivg_core import Decoder, SearchSpec, SearchStrategy, hookimpl

__all__ = [
    "BestOfNSpec",
    "ChunkBeamSearch",
    "ChunkBeamSearchSpec",
    "SamplingSearchSpec",
]


class ChunkBeamSearchSpec(SearchSpec):
    """Chunk-level beam search: W hypotheses, K candidates each, L tokens a chunk."""

    kind: Literal["chunk_beam_search"] = "chunk_beam_search"
    beam_width: int = Field(
        4, ge=1, strict=True, description="Hypotheses kept per prompt (W)."
    )
    num_candidates: int = Field(
        4,
        ge=1,
        strict=True,
        description="Continuations sampled from each hypothesis (K).",
    )
    chunk_length: int | None = Field(
        5,
        ge=1,
        strict=True,
        description=(
            "Tokens per chunk (L) between scoring and selection; None decodes "
            "whole responses and selects once at the end (best-of-N)."
        ),
    )

    def rows_per_prompt(self) -> int:
        return self.beam_width * self.num_candidates

    def build(self) -> ChunkBeamSearch:
        return ChunkBeamSearch(self.beam_width, self.num_candidates, self.chunk_length)


class BestOfNSpec(SearchSpec):
    """Best-of-N: sample N whole responses and keep the best-scoring one."""

    kind: Literal["best_of_n"] = "best_of_n"
    n: int = Field(
        4, ge=1, strict=True, description="Responses sampled per prompt (N)."
    )

    def rows_per_prompt(self) -> int:
        return self.n

    def build(self) -> ChunkBeamSearch:
        return ChunkBeamSearch(1, self.n, None)


class SamplingSearchSpec(SearchSpec):
    """Plain sampling: one response per prompt, no selection."""

    kind: Literal["sampling"] = "sampling"

    def build(self) -> ChunkBeamSearch:
        return ChunkBeamSearch(1, 1, None)


class ChunkBeamSearch(SearchStrategy):
    """Runs chunk-level beam search on a decoder.

    Rows of a prompt are laid out as W beams of K candidates each. A beam that
    ended before a chunk yields K identical copies. Only the first copy
    competes in the next selection, so a finished hypothesis is kept once.
    """

    def __init__(self, beam_width: int, num_candidates: int, chunk_length: int | None):
        self.beam_width = beam_width
        self.num_candidates = num_candidates
        self.chunk_length = chunk_length

    def run(self, decoder: Decoder) -> torch.Tensor:
        needs_ranking = self.beam_width * self.num_candidates > 1
        chunk = self.chunk_length if needs_ranking and self.chunk_length else math.inf
        eligible = torch.ones(decoder.num_rows, dtype=torch.bool)
        while decoder.active_rows.numel():
            ended_before = decoder.finished.clone()
            decoder.decode(None if chunk == math.inf else int(chunk))
            eligible = ~ended_before | (self._copy_index(decoder) == 0)
            if decoder.active_rows.numel() == 0:
                break
            decoder.select(self._select(decoder.score(), eligible, decoder))
            eligible = torch.ones(decoder.num_rows, dtype=torch.bool)
        scores = decoder.score()
        return self._best(scores, eligible, decoder)

    def _copy_index(self, decoder: Decoder) -> torch.Tensor:
        return torch.arange(decoder.num_rows) % self.num_candidates

    def _select(
        self, scores: torch.Tensor, eligible: torch.Tensor, decoder: Decoder
    ) -> torch.Tensor:
        """Return the source row of every row: the top W of each prompt, K times."""
        ranked = _rank_within_prompts(scores, eligible, decoder.rows_per_prompt)
        top = ranked[:, : self.beam_width]
        offsets = torch.arange(decoder.num_prompts)[:, None] * decoder.rows_per_prompt
        return (top + offsets).repeat_interleave(self.num_candidates, dim=1).reshape(-1)

    def _best(
        self, scores: torch.Tensor, eligible: torch.Tensor, decoder: Decoder
    ) -> torch.Tensor:
        ranked = _rank_within_prompts(scores, eligible, decoder.rows_per_prompt)
        offsets = torch.arange(decoder.num_prompts) * decoder.rows_per_prompt
        return ranked[:, 0] + offsets


def _rank_within_prompts(
    scores: torch.Tensor, eligible: torch.Tensor, rows_per_prompt: int
) -> torch.Tensor:
    """Return each prompt's row offsets sorted by score, best first, shape (P, R).

    Ineligible rows rank last; ties keep the lower row first.
    """
    masked = torch.where(eligible, scores, -math.inf).reshape(-1, rows_per_prompt)
    return torch.sort(masked, dim=1, descending=True, stable=True).indices


@hookimpl
def ivg_register_search_strategies(register) -> None:
    register(SamplingSearchSpec)
    register(BestOfNSpec)
    register(ChunkBeamSearchSpec)
