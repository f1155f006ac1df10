"""TL;DR summarization: summarize a Reddit post in one line.

A prompt is the post block ``SUBREDDIT: r/...\\nTITLE: ...\\nPOST: ...``; the
templates add ``\\nTL;DR:`` after it and the response is the summary, which
ends at the first newline. Sources, chosen with ``prompts``:

- ``hf:DATASET[:SPLIT]``: a Hub dataset with a ``prompt`` column in that
  format, shuffled with seed 42 and cut to its first 1,000 rows, as the
  reference runs do with ``chadlzx/openai_summarize_comparisons_relabel``;
  a ``chosen`` column, when present, is the reference summary;
- a JSON Lines, JSON or CSV file with that ``prompt`` column, or with the
  columns ``subreddit``, ``title`` and ``instruction`` (the post) and
  ``gold_response`` (the human summary), as in the TL;DR posts beside the
  checkout.
"""

from __future__ import annotations

from ivg_core import DataError, TaskPrompt, hookimpl
from ivg_core.data import load_records

from ..presets import PresetTask
from .presets import PRESETS

__all__ = ["SummarizeTask", "post_block"]

HUB_ROWS = 1000
HUB_SHUFFLE_SEED = 42
END_OF_TEXT = "<|endoftext|>"


def post_block(subreddit: str, title: str, post: str) -> str:
    """Return a post in the prompt format of the TL;DR comparison data."""
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}"


def clean_summary(text: str | None) -> str | None:
    """Return a reference summary without its ``TL;DR:`` label, cut at the end
    marker ``<|endoftext|>`` (some summaries continue with stray text)."""
    if text is None:
        return None
    text = text.split(END_OF_TEXT, 1)[0].strip()
    return text.removeprefix("TL;DR:").strip()


class SummarizeTask(PresetTask):
    """TL;DR summarization of Reddit posts; the golden reward rates summaries."""

    default_preset = "offline"
    description = "Reddit posts summarized after 'TL;DR:'"
    presets_by_name = PRESETS

    def load_prompts(self, preset: str, source: str | None) -> list[TaskPrompt]:
        source = source or self.preset(preset).prompts
        if not source:
            raise DataError(
                f"the {preset} preset has no default prompts; pass --prompts with "
                "a JSON Lines file of TL;DR posts"
            )
        records = load_records(
            source, "test", shuffle_seed=HUB_SHUFFLE_SEED, limit=HUB_ROWS
        )
        return [_prompt(i, record, source) for i, record in enumerate(records)]


def _prompt(index: int, record: dict, source: str) -> TaskPrompt:
    if record.get("prompt") is not None:
        text = str(record["prompt"]).rstrip()
        text = text.removesuffix("TL;DR:").rstrip()
        reference = record.get("chosen") or record.get("gold_response")
        return TaskPrompt(index, text, clean_summary(reference))
    missing = [k for k in ("subreddit", "title", "instruction") if k not in record]
    if missing:
        raise DataError(
            f"{source}: record {index} has neither a 'prompt' column nor the "
            f"columns subreddit, title and instruction (missing {missing})"
        )
    text = post_block(record["subreddit"], record["title"], record["instruction"])
    return TaskPrompt(index, text, clean_summary(record.get("gold_response")))


@hookimpl
def ivg_register_tasks(register) -> None:
    register("summarize", SummarizeTask())
