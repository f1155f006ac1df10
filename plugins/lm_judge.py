"""LM judge: a zero-shot explicit value read from a language model's next token.

The judge reads the prompt in its template, the response, then ``suffix``
(for example a question such as ``"\\nSentiment:"``), and the score is
``log p(positive) − log p(negative)`` of the first token of each label word.
The judge may use another tokenizer than the base: it reads the response text.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ivg_core import (
    BuildContext,
    ChunkScorer,
    ChunkScorerSpec,
    Decoder,
    ModelRef,
    Participant,
    ParticipantRequest,
    SpecError,
    hookimpl,
)

__all__ = ["LMJudge", "LMJudgeSpec"]

TAG = "lm_judge"


class LMJudgeSpec(ChunkScorerSpec):
    """Chunk scorer log p(positive) − log p(negative) after a judge prompt."""

    kind: Literal["lm_judge"] = "lm_judge"
    model: ModelRef = Field(
        description=(
            "Judge model; its template renders the text before the response, "
            "with '{prompt}' where the prompt goes."
        ),
    )
    suffix: str = Field(
        "\nSentiment:",
        description="Text after the response, after which the label is read.",
    )
    positive: str = Field(
        " positive", min_length=1, description="Label word of a high score."
    )
    negative: str = Field(
        " negative", min_length=1, description="Label word of a low score."
    )

    @model_validator(mode="after")
    def _check_labels(self) -> LMJudgeSpec:
        if self.positive == self.negative:
            raise ValueError(
                f"positive and negative are both {self.positive!r}; give two "
                "different label words"
            )
        return self

    def participants(self) -> list[ParticipantRequest]:
        return [ParticipantRequest(self.model, level="chunk", tag=TAG)]

    def build(self, context: BuildContext) -> LMJudge:
        participant = context.participant(
            ParticipantRequest(self.model, level="chunk", tag=TAG)
        )
        return LMJudge(participant, self.suffix, self.positive, self.negative)


class LMJudge(ChunkScorer):
    """Scores rows by the judge's log-probability margin of two label words."""

    def __init__(
        self, participant: Participant, suffix: str, positive: str, negative: str
    ) -> None:
        self.participant = participant
        self.suffix_ids = participant.encode_text(suffix)
        self.positive_id = _first_token(participant, positive)
        self.negative_id = _first_token(participant, negative)
        if self.positive_id == self.negative_id:
            raise SpecError(
                f"the labels {positive!r} and {negative!r} start with the same "
                f"token of {participant.label!r}; choose label words whose first "
                "tokens differ"
            )

    def score(self, decoder: Decoder, rows: torch.Tensor) -> torch.Tensor:
        output = decoder.output_after(self.participant, rows, self.suffix_ids)
        log_probs = torch.log_softmax(output.double(), dim=-1)
        return log_probs[:, self.positive_id] - log_probs[:, self.negative_id]


def _first_token(participant: Participant, label: str) -> int:
    ids = participant.encode_text(label)
    if not ids:
        raise SpecError(
            f"the label {label!r} encodes to no tokens for {participant.label!r}; "
            "use a visible word"
        )
    return ids[0]


@hookimpl
def ivg_register_chunk_scorers(register) -> None:
    register(LMJudgeSpec)
