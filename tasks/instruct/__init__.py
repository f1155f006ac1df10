"""Instruction following: answer UltraFeedback and AlpacaEval instructions.

Sources, chosen with ``prompts``:

- ``hf:DATASET[:SPLIT]``: a Hub dataset, such as ``hf:tatsu-lab/alpaca_eval:eval``
  (the 805 AlpacaEval instructions) or ``hf:chadlzx/ultrafeedback_with_rewards``;
- a JSON Lines, JSON or CSV file.

A record's ``prompt`` or ``instruction`` column is the instruction. Its
``chosen`` answer (UltraFeedback) or ``output`` (AlpacaEval example outputs),
when present, is the reference answer. Every run also writes each method's
responses in AlpacaEval's ``model_outputs.json`` format, so the
``alpaca_eval`` command can judge them.
"""

from __future__ import annotations

import json
from pathlib import Path

from ivg_core import DataError, TaskPrompt, hookimpl
from ivg_core.data import load_records, require_column

from ..presets import PresetTask
from .presets import PRESETS

__all__ = ["InstructTask", "reference_answer"]

ALPACA_EVAL_FOLDER = "alpaca_eval"


def reference_answer(record: dict) -> str | None:
    """Return a record's reference answer: UltraFeedback's chosen, or ``output``."""
    chosen = record.get("chosen")
    if isinstance(chosen, list):
        # Chat-formatted pairs store the conversation; the answer is last.
        replies = [m.get("content") for m in chosen if isinstance(m, dict)]
        chosen = replies[-1] if replies else None
    answer = chosen if chosen is not None else record.get("output")
    return str(answer) if answer is not None else None


class InstructTask(PresetTask):
    """Instruction following, judged offline by ROUGE-L or by AlpacaEval."""

    default_preset = "offline"
    description = "UltraFeedback and AlpacaEval instructions answered in chat format"
    presets_by_name = PRESETS

    def load_prompts(self, preset: str, source: str | None) -> list[TaskPrompt]:
        source = source or self.preset(preset).prompts
        if not source:
            raise DataError(
                f"the {preset} preset has no default prompts; pass --prompts with "
                "a JSON Lines or JSON file of instructions"
            )
        records = load_records(source, "train")
        column = require_column(records, ["prompt", "instruction"], source)
        return [
            TaskPrompt(i, str(record[column]), reference_answer(record))
            for i, record in enumerate(records)
        ]

    def write_outputs(
        self,
        out_dir: Path,
        preset: str,
        method: str,
        prompts: list[TaskPrompt],
        responses: list[str],
    ) -> list[Path]:
        folder = Path(out_dir) / ALPACA_EVAL_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        generator = f"ivg-{preset}-{method}"
        outputs = [
            {"instruction": prompt.text, "output": response, "generator": generator}
            for prompt, response in zip(prompts, responses, strict=True)
        ]
        path = folder / f"{method.replace('+', '_')}_model_outputs.json"
        path.write_text(json.dumps(outputs, indent=2, ensure_ascii=False) + "\n")
        return [path]


@hookimpl
def ivg_register_tasks(register) -> None:
    register("instruct", InstructTask())
