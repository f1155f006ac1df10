"""Token reward model: explicit value at the token level and at the chunk level.

A token reward model is a transformer backbone with a head
``Linear(hidden, vocab, bias=False)`` stored as ``score_head.weight`` that
outputs Q(s, a) for every next token ``a``. As a token guide it adds
``w · Q(s, ·)`` to the base logits; as a chunk scorer it scores a partial
response by the Q of its last token, ``V(x, y_≤T) = Q(x ∘ y_<T, y_T)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ivg_core import (
    BuildContext,
    ChunkScorer,
    ChunkScorerSpec,
    Decoder,
    ModelRef,
    Participant,
    ParticipantRequest,
    TokenGuide,
    TokenGuideSpec,
    hookimpl,
)

__all__ = ["TokenRMGuide", "TokenRMGuideSpec", "TokenRMScorer", "TokenRMScorerSpec"]

HEAD = "token_rm"
TRACK = "output"
MODEL_DESCRIPTION = (
    "Token reward model checkpoint: a backbone under 'transformer.' (GPT-2) or "
    "'model.' (Llama) and score_head.weight of shape (vocab, hidden)."
)


class TokenRMGuideSpec(TokenGuideSpec):
    """Token guide w · Q(s, ·) from a token reward model."""

    kind: Literal["token_rm"] = "token_rm"
    model: ModelRef = Field(description=MODEL_DESCRIPTION)

    def participants(self) -> list[ParticipantRequest]:
        return [ParticipantRequest(self.model, level="token", head=HEAD)]

    def build(self, context: BuildContext) -> TokenRMGuide:
        request = ParticipantRequest(self.model, level="token", head=HEAD)
        return TokenRMGuide(context.participant(request))


class TokenRMGuide(TokenGuide):
    """Adds the token reward model's Q(s, ·) to the base logits."""

    def __init__(self, participant: Participant) -> None:
        self.participant = participant

    def adjust(self, decoder: Decoder) -> torch.Tensor:
        return decoder.token_output(self.participant)


class TokenRMScorerSpec(ChunkScorerSpec):
    """Chunk scorer Q(x ∘ y_<T, y_T): the token reward model's value of y."""

    kind: Literal["token_rm"] = "token_rm"
    model: ModelRef = Field(description=MODEL_DESCRIPTION)

    def participants(self) -> list[ParticipantRequest]:
        return [
            ParticipantRequest(self.model, level="chunk", head=HEAD, track=(TRACK,))
        ]

    def build(self, context: BuildContext) -> TokenRMScorer:
        request = ParticipantRequest(self.model, level="chunk", head=HEAD)
        return TokenRMScorer(context.participant(request))


class TokenRMScorer(ChunkScorer):
    """Scores each row by the Q value of its last response token.

    A response with no tokens in the model's tokenization scores 0.
    """

    def __init__(self, participant: Participant) -> None:
        self.participant = participant

    def score(self, decoder: Decoder, rows: torch.Tensor) -> torch.Tensor:
        tracked = decoder.tracked_values(self.participant, TRACK)
        return torch.where(tracked.count[rows] > 0, tracked.last[rows], 0.0)


@hookimpl
def ivg_register_token_guides(register) -> None:
    register(TokenRMGuideSpec)


@hookimpl
def ivg_register_chunk_scorers(register) -> None:
    register(TokenRMScorerSpec)
