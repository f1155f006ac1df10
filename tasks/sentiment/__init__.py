"""IMDB sentiment: continue the opening words of a movie review positively.

Prompts are the first words of IMDB reviews. Sources, chosen with ``prompts``:

- ``builtin``: review openings written for this project and shipped with it;
- ``hf:DATASET[:SPLIT]``: a Hugging Face Hub dataset (default split ``test``),
  such as ``hf:stanfordnlp/imdb`` or ``hf:ZHZisZZ/imdb_preference`` (the
  reference runs' prompts);
- a path to a CSV, JSON Lines, JSON or text file.

A record's ``prompt`` column is used as it is; otherwise the first words of
its ``text`` or ``review`` column, with ``<br />`` tags removed.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from ivg_core import TaskPrompt, hookimpl
from ivg_core.data import load_records, require_column

from ..presets import PresetTask
from .presets import PRESETS

__all__ = ["SentimentTask", "review_opening"]

DEFAULT_WORDS = 8
BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)


def review_opening(review: str, words: int = DEFAULT_WORDS) -> str:
    """Return the first ``words`` words of a review, without ``<br />`` tags."""
    text = BREAK_TAG.sub(" ", review)
    return " ".join(text.split()[:words])


TRAINED_TOKEN_RM = "token-rm-imdb"


def trained_token_rm() -> Path | None:
    """Return the folder of the IMDB token reward model in the cache, if any.

    ``ivg train token-rm ... --name token-rm-imdb`` writes it there.
    """
    from ivg_plugins.embedded import cache_dir

    folder = cache_dir() / TRAINED_TOKEN_RM
    return folder if (folder / "config.json").is_file() else None


class SentimentTask(PresetTask):
    """IMDB sentiment: continue review openings; higher sentiment is better."""

    default_preset = "offline"
    description = "IMDB review openings continued with positive sentiment"
    presets_by_name = PRESETS

    def __init__(self, words: int = DEFAULT_WORDS) -> None:
        self.words = words

    def spec(self, preset: str, method: str) -> dict:
        """Return a method's spec; offline ``ivg`` uses a trained token RM if any.

        With a token reward model trained on IMDB in the cache, the offline
        ``ivg`` method scores chunks with it instead of the zero-shot judge.
        """
        spec = super().spec(preset, method)
        folder = trained_token_rm()
        if preset == "offline" and method == "ivg" and folder is not None:
            spec["chunk_scorers"] = [
                {"kind": "token_rm", "model": {"name_or_path": str(folder)}}
            ]
        return spec

    def load_prompts(self, preset: str, source: str | None) -> list[TaskPrompt]:
        source = source or self.preset(preset).prompts
        if source == "builtin":
            return self._builtin_prompts()
        return self._prompts_from(load_records(source, "test"), source)

    def _builtin_prompts(self) -> list[TaskPrompt]:
        text = files(__package__).joinpath("openings.txt").read_text(encoding="utf-8")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return [TaskPrompt(i, line) for i, line in enumerate(lines)]

    def _prompts_from(self, records: list[dict], source: str) -> list[TaskPrompt]:
        column = require_column(records, ["prompt", "text", "review"], source)
        if column == "prompt":
            return [TaskPrompt(i, str(r[column])) for i, r in enumerate(records)]
        return [
            TaskPrompt(i, review_opening(str(r[column]), self.words))
            for i, r in enumerate(records)
        ]


@hookimpl
def ivg_register_tasks(register) -> None:
    register("sentiment", SentimentTask())
