"""Run reports: golden reward per method, paired against the unguided baseline."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["MethodSummary", "format_markdown", "summarize_method"]


@dataclass
class MethodSummary:
    """Statistics of one method over the prompts of a run.

    Attributes:
        method: the method name.
        prompts: number of prompts.
        golden_mean: mean golden reward.
        golden_se: standard error of that mean.
        delta_vs_baseline: mean of (method − baseline) golden reward on the same
            prompts; None for the baseline itself or without a baseline.
        delta_se: standard error of the paired differences.
        win_rate: share of prompts where the method's golden reward is above
            the baseline's, ties counting one half.
        mean_words: mean number of words of the responses.
        new_tokens: tokens of the returned responses.
        decoded_tokens: tokens sampled over all rows, beams and candidates.
        wall_seconds: decoding time of the method, model loading excluded.
    """

    method: str
    prompts: int
    golden_mean: float
    golden_se: float
    delta_vs_baseline: float | None
    delta_se: float | None
    win_rate: float | None
    mean_words: float
    new_tokens: int
    decoded_tokens: int
    wall_seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Returned response tokens per second of decoding."""
        return self.new_tokens / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def decoded_tokens_per_second(self) -> float:
        """Sampled tokens of all rows per second of decoding."""
        return self.decoded_tokens / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict:
        """Return the fields and the derived rates as a JSON-serialisable dict."""
        return {
            **asdict(self),
            "tokens_per_second": self.tokens_per_second,
            "decoded_tokens_per_second": self.decoded_tokens_per_second,
        }


def summarize_method(
    method: str,
    golden: list[float],
    baseline: list[float] | None,
    new_tokens: int,
    decoded_tokens: int,
    wall_seconds: float,
    mean_words: float = math.nan,
) -> MethodSummary:
    """Summarize one method's golden rewards, paired with the baseline's."""
    delta = delta_se = win_rate = None
    if baseline is not None:
        differences = [g - b for g, b in zip(golden, baseline, strict=True)]
        delta, delta_se = _mean(differences), _standard_error(differences)
        wins = [1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in differences]
        win_rate = _mean(wins)
    return MethodSummary(
        method=method,
        prompts=len(golden),
        golden_mean=_mean(golden),
        golden_se=_standard_error(golden),
        delta_vs_baseline=delta,
        delta_se=delta_se,
        win_rate=win_rate,
        mean_words=mean_words,
        new_tokens=new_tokens,
        decoded_tokens=decoded_tokens,
        wall_seconds=wall_seconds,
    )


def format_markdown(summaries: list[MethodSummary], golden_name: str) -> str:
    """Return the summaries as a Markdown table."""
    lines = [
        f"| method | prompts | {golden_name} mean ± SE | Δ vs base ± paired SE "
        "| win rate vs base | words | tokens/s | decoded tokens/s | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        delta = (
            "–"
            if s.delta_vs_baseline is None or s.delta_se is None
            else f"{s.delta_vs_baseline:+.3f} ± {s.delta_se:.3f}"
        )
        win = "–" if s.win_rate is None else f"{s.win_rate:.2f}"
        lines.append(
            f"| {s.method} | {s.prompts} | {s.golden_mean:.3f} ± {s.golden_se:.3f} "
            f"| {delta} | {win} | {s.mean_words:.1f} | {s.tokens_per_second:.1f} "
            f"| {s.decoded_tokens_per_second:.1f} | {s.wall_seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _standard_error(values: list[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))
