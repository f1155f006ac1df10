"""Final outputs of a task run: merged generations, specs and the report."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .report import MethodSummary, format_markdown, summarize_method
from .run_folder import BatchRecord, RunFolder

if TYPE_CHECKING:
    from .runner import RunPlan

__all__ = ["finish_run"]


def finish_run(
    plan: RunPlan, folder: RunFolder
) -> tuple[list[MethodSummary], str, dict[str, Path]]:
    """Merge the finished batches and write generations, specs and the report.

    Returns:
        the summary of every method, the golden reward's name, and the paths of
        the files written.

    Raises:
        SpecError: a batch is missing, as after a process that failed.
    """
    records = _records_in_order(plan, folder.done_batches())
    files = {"generations": folder.write_generations(_rows(records, plan.methods))}
    summaries = _summaries(plan, records)
    for method in plan.methods:
        spec = plan.specs[method].model_dump(mode="json")
        files[f"{method}:spec"] = folder.write_spec(method, spec)
        rows = [row for record in records[method] for row in record.rows]
        responses = [row["response"] for row in rows]
        for path in plan.task.write_outputs(
            folder.path, plan.preset, method, plan.prompts, responses
        ):
            files[f"{method}:{path.name}"] = path
    files.update(_write_report(plan, folder, summaries))
    return summaries, plan.evaluator.kind, files


def _records_in_order(
    plan: RunPlan, done: dict[tuple[str, int], BatchRecord]
) -> dict[str, list[BatchRecord]]:
    count = len(plan.batches())
    missing = [
        (method, index)
        for method in plan.methods
        for index in range(count)
        if (method, index) not in done
    ]
    if missing:
        raise SpecError(
            f"{len(missing)} batches have no output, such as batch {missing[0][1]} "
            f"of method {missing[0][0]!r}; run the same command again to decode them"
        )
    return {m: [done[(m, i)] for i in range(count)] for m in plan.methods}


def _rows(records: dict[str, list[BatchRecord]], methods: list[str]) -> list[dict]:
    return [row for method in methods for r in records[method] for row in r.rows]


def _summaries(
    plan: RunPlan, records: dict[str, list[BatchRecord]]
) -> list[MethodSummary]:
    baseline_method = plan.task.methods(plan.preset)[0]
    golden = {
        method: [row["golden"] for r in records[method] for row in r.rows]
        for method in plan.methods
    }
    baseline = golden.get(baseline_method)
    summaries = []
    for method in plan.methods:
        rows = [row for r in records[method] for row in r.rows]
        summaries.append(
            summarize_method(
                method,
                golden[method],
                None if method == baseline_method else baseline,
                sum(row["new_tokens"] for row in rows),
                sum(r.decoded_tokens for r in records[method]),
                sum(r.wall_seconds for r in records[method]),
                mean_words=sum(len(row["response"].split()) for row in rows)
                / max(len(rows), 1),
            )
        )
    return summaries


def _write_report(
    plan: RunPlan, folder: RunFolder, summaries: list[MethodSummary]
) -> dict[str, Path]:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    golden = plan.evaluator.kind
    data: dict[str, Any] = {
        "task": plan.options.task,
        "preset": plan.preset,
        "golden": golden,
        "prompts": len(plan.prompts),
        "seed": plan.options.seed,
        "max_new_tokens": plan.options.max_new_tokens,
        "created": created,
        "methods": [summary.to_dict() for summary in summaries],
    }
    header = (
        f"# {plan.options.task}, preset {plan.preset}\n\n"
        f"{len(plan.prompts)} prompts, golden reward: {golden}, written {created}.\n"
        "Δ and win rate compare each method with `base` on the same prompts.\n\n"
    )
    return {
        "report_json": folder.write_text(
            "report.json", json.dumps(data, indent=2) + "\n"
        ),
        "report_md": folder.write_text(
            "report.md", header + format_markdown(summaries, golden)
        ),
    }
