"""The per-prompt result of guided generation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GenerationResult"]


@dataclass
class GenerationResult:
    """The response chosen for one prompt.

    Attributes:
        prompt: the prompt text, before any template.
        text: the response text, without EOS and cut before a stop string.
        token_ids: the response token ids in the base vocabulary, EOS included.
        finish_reason: ``"eos"``, ``"stop"`` (a stop string) or ``"length"``.
        scores: each chunk scorer's unweighted score of the response, by name.
        score: the weighted total that search ranked by; None without scorers.
    """

    prompt: str
    text: str
    token_ids: list[int]
    finish_reason: str
    scores: dict[str, float] = field(default_factory=dict)
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict."""
        return asdict(self)
