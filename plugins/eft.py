"""Emulated fine-tuning (EFT): token-level guidance from tuned/untuned model pairs.

The guide adds ``Σ_i w_i (ℓ_tuned_i − ℓ_untuned)`` to the base logits, where
ℓ are next-token logits (Mitchell et al., "An Emulator for Fine-Tuning Large
Language Models using Small Language Models", arXiv 2310.12962). Raw logits
are mixed: each model's log-normaliser is a per-row constant that the softmax
removes.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from ivg_core import (
    BuildContext,
    Decoder,
    ModelRef,
    Participant,
    ParticipantRequest,
    TokenGuide,
    TokenGuideSpec,
    hookimpl,
)

__all__ = ["EFTGuide", "EFTSpec"]


class EFTSpec(TokenGuideSpec):
    """Token guide Σ_i w_i (ℓ_tuned_i − ℓ_untuned) from tuned/untuned pairs."""

    kind: Literal["eft"] = "eft"
    tuned: list[ModelRef] = Field(
        min_length=1,
        description=(
            "Tuned models (one model or a list); each shares the untuned model "
            "as its reference."
        ),
    )
    untuned: ModelRef = Field(
        description=(
            "Untuned reference model; when it equals the base model, template "
            "included, the base logits are reused."
        ),
    )
    tuned_weights: list[float] | None = Field(
        None,
        description=(
            "Weight w_i of each tuned model, multiplied by the guide's weight; "
            "default: 1.0 for each."
        ),
    )

    @field_validator(
        "tuned", mode="before", json_schema_input_type=ModelRef | list[ModelRef]
    )
    @classmethod
    def _wrap_single_model(cls, tuned: Any) -> Any:
        if isinstance(tuned, dict | ModelRef):
            return [tuned]
        return tuned

    @model_validator(mode="after")
    def _check_weights(self) -> EFTSpec:
        if self.tuned_weights is not None and len(self.tuned_weights) != len(
            self.tuned
        ):
            raise ValueError(
                f"tuned_weights has {len(self.tuned_weights)} value(s) for "
                f"{len(self.tuned)} tuned model(s); give one weight per tuned model"
            )
        return self

    def participants(self) -> list[ParticipantRequest]:
        return [ParticipantRequest(ref) for ref in [*self.tuned, self.untuned]]

    def build(self, context: BuildContext) -> EFTGuide:
        tuned = [context.participant(ParticipantRequest(ref)) for ref in self.tuned]
        untuned = context.participant(ParticipantRequest(self.untuned))
        weights = self.tuned_weights or [1.0] * len(tuned)
        return EFTGuide(tuned, untuned, weights)


class EFTGuide(TokenGuide):
    """Adds Σ_i w_i (ℓ_tuned_i − ℓ_untuned) to the base logits."""

    def __init__(
        self, tuned: list[Participant], untuned: Participant, weights: list[float]
    ) -> None:
        self.tuned = tuned
        self.untuned = untuned
        self.weights = weights

    def adjust(self, decoder: Decoder) -> torch.Tensor:
        untuned = decoder.token_output(self.untuned)
        adjustment = None
        for participant, weight in zip(self.tuned, self.weights, strict=True):
            term = decoder.token_output(participant) - untuned
            term = term if weight == 1.0 else weight * term
            adjustment = term if adjustment is None else adjustment + term
        return adjustment


@hookimpl
def ivg_register_token_guides(register) -> None:
    register(EFTSpec)
