"""Example ivg plugin: a repetition penalty token guide and a keyword scorer."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ivg_core import (
    BuildContext,
    ChunkScorer,
    ChunkScorerSpec,
    Decoder,
    TokenGuide,
    TokenGuideSpec,
    hookimpl,
)

__all__ = ["KeywordScorer", "KeywordSpec", "RepetitionPenalty", "RepetitionPenaltySpec"]


class RepetitionPenaltySpec(TokenGuideSpec):
    """Token guide that lowers the logits of tokens the response already has."""

    kind: Literal["repetition_penalty"] = "repetition_penalty"
    count_repeats: bool = Field(
        False,
        description=(
            "Subtract one per earlier occurrence of a token instead of once for "
            "any number of occurrences."
        ),
    )

    def build(self, context: BuildContext) -> RepetitionPenalty:
        return RepetitionPenalty(self.count_repeats)


class RepetitionPenalty(TokenGuide):
    """Adds -1 (or -count) for every token already in the row's response."""

    def __init__(self, count_repeats: bool) -> None:
        self.count_repeats = count_repeats

    def adjust(self, decoder: Decoder) -> torch.Tensor:
        rows = decoder.active_rows
        vocab = decoder.generator.vocab_size
        counts = torch.zeros(rows.numel(), vocab)
        if decoder.steps:
            seen = decoder.tokens[rows, : decoder.steps]
            counts.scatter_add_(1, seen, torch.ones_like(seen, dtype=counts.dtype))
        penalty = counts if self.count_repeats else (counts > 0).to(counts.dtype)
        return -penalty


class KeywordSpec(ChunkScorerSpec):
    """Chunk scorer that counts keyword occurrences in the response text."""

    kind: Literal["keyword"] = "keyword"
    keywords: list[str] = Field(
        min_length=1, description="Words or phrases whose occurrences count."
    )
    case_sensitive: bool = Field(False, description="Match letter case exactly.")

    def build(self, context: BuildContext) -> KeywordScorer:
        return KeywordScorer(self.keywords, self.case_sensitive)


class KeywordScorer(ChunkScorer):
    """Scores each row by the number of keyword occurrences in its response."""

    def __init__(self, keywords: list[str], case_sensitive: bool) -> None:
        self.case_sensitive = case_sensitive
        self.keywords = keywords if case_sensitive else [k.lower() for k in keywords]

    def score(self, decoder: Decoder, rows: torch.Tensor) -> torch.Tensor:
        scores = []
        for row in rows.tolist():
            text = decoder.response_text(row)
            text = text if self.case_sensitive else text.lower()
            scores.append(sum(text.count(keyword) for keyword in self.keywords))
        return torch.tensor(scores, dtype=torch.float64)


@hookimpl
def ivg_register_token_guides(register) -> None:
    register(RepetitionPenaltySpec)


@hookimpl
def ivg_register_chunk_scorers(register) -> None:
    register(KeywordSpec)
