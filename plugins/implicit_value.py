"""Implicit value: a chunk scorer from a tuned/untuned model pair.

``V(x, y) = β · (log π_tuned(y | x) − log π_untuned(y | x))``, the reward that
DPO training makes implicit in a tuned model, used as a value of partial
responses by weak-to-strong search (Zhou et al., arXiv 2405.19262). The
log-probabilities are accumulated token by token as the response grows, never
recomputed from the start.
"""

from __future__ import annotations

import logging
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
    hookimpl,
)

__all__ = ["ImplicitValue", "ImplicitValueSpec"]

logger = logging.getLogger(__name__)

TRACK = "logprob"


class ImplicitValueSpec(ChunkScorerSpec):
    """Chunk scorer β (log π_tuned(y|x) − log π_untuned(y|x))."""

    kind: Literal["implicit_value"] = "implicit_value"
    tuned: ModelRef = Field(description="Tuned model, such as a DPO checkpoint.")
    untuned: ModelRef | None = Field(
        None,
        description=(
            "Untuned reference model, such as the SFT checkpoint the tuned model "
            "started from; leave empty only with reference_free."
        ),
    )
    beta: float = Field(1.0, description="Scale β of the log-probability ratio.")
    average_log_prob: bool = Field(
        False,
        description=(
            "Divide each model's summed log-probability by the number of "
            "response tokens it has scored."
        ),
    )
    reference_free: bool = Field(
        False, description="Drop the untuned term: V = β log π_tuned(y|x)."
    )

    @model_validator(mode="after")
    def _check_untuned(self) -> ImplicitValueSpec:
        if self.untuned is None and not self.reference_free:
            raise ValueError(
                "untuned is empty; give the untuned reference model, or set "
                "reference_free to true to score with the tuned model alone"
            )
        return self

    def participants(self) -> list[ParticipantRequest]:
        models = [self.tuned] if self.reference_free else [self.tuned, self.untuned]
        return [ParticipantRequest(m, level="chunk", track=(TRACK,)) for m in models]

    def build(self, context: BuildContext) -> ImplicitValue:
        if self.reference_free and self.untuned is not None:
            logger.warning(
                "implicit_value ignores untuned %r because reference_free is true",
                self.untuned.name_or_path,
            )
        tuned = context.participant(ParticipantRequest(self.tuned, level="chunk"))
        untuned = None
        if not self.reference_free:
            untuned = context.participant(
                ParticipantRequest(self.untuned, level="chunk")
            )
        return ImplicitValue(tuned, untuned, self.beta, self.average_log_prob)


class ImplicitValue(ChunkScorer):
    """Scores rows by β times the tuned/untuned log-probability ratio."""

    def __init__(
        self,
        tuned: Participant,
        untuned: Participant | None,
        beta: float,
        average_log_prob: bool,
    ) -> None:
        self.tuned = tuned
        self.untuned = untuned
        self.beta = beta
        self.average_log_prob = average_log_prob

    def score(self, decoder: Decoder, rows: torch.Tensor) -> torch.Tensor:
        value = self._log_prob(decoder, self.tuned, rows)
        if self.untuned is not None:
            value = value - self._log_prob(decoder, self.untuned, rows)
        return self.beta * value

    def _log_prob(
        self, decoder: Decoder, participant: Participant, rows: torch.Tensor
    ) -> torch.Tensor:
        tracked = decoder.tracked_values(participant, TRACK)
        total = tracked.total[rows]
        if self.average_log_prob:
            total = total / tracked.count[rows].clamp(min=1)
        return total


@hookimpl
def ivg_register_chunk_scorers(register) -> None:
    register(ImplicitValueSpec)
