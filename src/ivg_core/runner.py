"""Task runs: every method of a preset on the same prompts, scored by a golden
evaluator, with generations and a report written to an output folder."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm.auto import tqdm

from .errors import SpecError
from .extension import BuildContext, Evaluator, Task, TaskPrompt
from .generator import GuidedGenerator
from .models import ModelStore
from .registry import Registry, current_registry
from .report import MethodSummary, format_markdown, summarize_method
from .results import GenerationResult
from .specs import EvaluatorSpec, GuidanceSpec, format_validation_error, load_spec

__all__ = ["RunOptions", "RunReport", "resolved_spec", "run_task"]

logger = logging.getLogger(__name__)

CUSTOM_METHOD = "custom"
SPEC_FOLDER = "specs"


@dataclass
class RunOptions:
    """What to run: a task, a preset, methods, prompts and where outputs go.

    Attributes:
        task: registered task name, such as ``"sentiment"``.
        preset: preset name; None means the task's default preset.
        methods: method names; None means every method of the task.
        limit: use only the first ``limit`` prompts.
        prompts: prompt source (see the task), or None for the preset's default.
        out_dir: folder for generations.jsonl, report.json and report.md.
        seed: run seed; None keeps each spec's seed.
        spec: a spec file to run as the method ``custom``, next to the
            baseline unless ``methods`` names others.
        max_new_tokens: override of every spec's ``sampling.max_new_tokens``.
        batch_size: prompts decoded together; None means the task's default.
        progress: show a progress bar on stderr.
    """

    task: str
    preset: str | None = None
    methods: list[str] | None = None
    limit: int | None = None
    prompts: str | None = None
    out_dir: Path = Path("runs")
    seed: int | None = None
    spec: Path | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    progress: bool = True


@dataclass
class RunReport:
    """The outcome of a run: one summary per method and the files written."""

    task: str
    preset: str
    summaries: list[MethodSummary]
    golden: str
    files: dict[str, Path] = field(default_factory=dict)

    def markdown(self) -> str:
        """Return the summary table as Markdown."""
        return format_markdown(self.summaries, self.golden)


def run_task(options: RunOptions, registry: Registry | None = None) -> RunReport:
    """Run methods of a task preset on the same prompts and write the results.

    Every spec is validated, and the prompts are read, before any model loads.

    Raises:
        SpecError: an unknown task, preset or method, or an invalid spec.
    """
    registry = registry or current_registry()
    task = _task(registry, options.task)
    preset = options.preset or task.default_preset
    methods = _methods(task, preset, options.methods, options.spec is not None)
    specs = {m: _method_spec(task, preset, m, options, registry) for m in methods}
    evaluator_spec = _evaluator_spec(task.evaluator(preset), registry)
    prompts = _prompts(task, preset, options)

    if options.batch_size is None:
        options = replace(options, batch_size=task.default_batch_size(preset))
    store = ModelStore(registry)
    evaluator = evaluator_spec.build(BuildContext({}, None, store))
    outcomes = {
        method: _run_method(method, specs[method], prompts, options, registry, store)
        for method in methods
    }
    return _write_outputs(
        task, options, preset, prompts, outcomes, evaluator, evaluator_spec
    )


@dataclass
class _Outcome:
    results: list[GenerationResult]
    decoded_tokens: int
    wall_seconds: float
    seed: int
    spec: dict[str, Any]


def _run_method(
    method: str,
    spec: GuidanceSpec,
    prompts: list[TaskPrompt],
    options: RunOptions,
    registry: Registry,
    store: ModelStore,
) -> _Outcome:
    logger.info("loading the models of method %r", method)
    generator = GuidedGenerator(spec, registry, store=store)
    results: list[GenerationResult] = []
    started = time.perf_counter()
    with tqdm(
        total=len(prompts), desc=method, unit="prompt", disable=not options.progress
    ) as progress:
        for start in range(0, len(prompts), options.batch_size):
            batch = prompts[start : start + options.batch_size]
            results += generator.generate(
                [p.text for p in batch], prompt_ids=[p.id for p in batch]
            )
            progress.update(len(batch))
    wall = time.perf_counter() - started
    resolved = spec.model_dump(mode="json")
    return _Outcome(
        results, generator.decoded_tokens, wall, spec.sampling.seed, resolved
    )


def _write_outputs(
    task: Task,
    options: RunOptions,
    preset: str,
    prompts: list[TaskPrompt],
    outcomes: dict[str, _Outcome],
    evaluator: Evaluator,
    evaluator_spec: EvaluatorSpec,
) -> RunReport:
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [p.text for p in prompts]
    references = [p.reference for p in prompts]
    golden = {
        method: evaluator.evaluate(texts, [r.text for r in outcome.results], references)
        for method, outcome in outcomes.items()
    }
    generations = out_dir / "generations.jsonl"
    with generations.open("w", encoding="utf-8") as handle:
        for method, outcome in outcomes.items():
            for prompt, result, score in zip(
                prompts, outcome.results, golden[method], strict=True
            ):
                row = _generation_row(method, prompt, result, score, outcome.seed)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    baseline_method = task.methods(preset)[0]
    baseline = golden.get(baseline_method)
    summaries = [
        summarize_method(
            method,
            golden[method],
            None if method == baseline_method else baseline,
            sum(len(r.token_ids) for r in outcome.results),
            outcome.decoded_tokens,
            outcome.wall_seconds,
            mean_words=_mean_words(outcome.results),
        )
        for method, outcome in outcomes.items()
    ]
    report = RunReport(options.task, preset, summaries, evaluator_spec.kind)
    report.files = {
        "generations": generations,
        "report_json": out_dir / "report.json",
        "report_md": out_dir / "report.md",
    }
    for method, outcome in outcomes.items():
        path = out_dir / SPEC_FOLDER / f"{method.replace('+', '_')}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(outcome.spec, indent=2) + "\n")
        report.files[f"{method}:spec"] = path
        responses = [r.text for r in outcome.results]
        for path in task.write_outputs(out_dir, preset, method, prompts, responses):
            report.files[f"{method}:{path.name}"] = path
    _write_report_files(report, options, len(prompts))
    return report


def _mean_words(results: list[GenerationResult]) -> float:
    return sum(len(r.text.split()) for r in results) / max(len(results), 1)


def _generation_row(
    method: str, prompt: TaskPrompt, result: GenerationResult, golden: float, seed: int
) -> dict[str, Any]:
    return {
        "prompt_id": prompt.id,
        "method": method,
        "prompt": prompt.text,
        "response": result.text,
        "golden": golden,
        "scores": result.scores,
        "score": result.score,
        "finish_reason": result.finish_reason,
        "new_tokens": len(result.token_ids),
        "seed": seed,
    }


def _write_report_files(report: RunReport, options: RunOptions, prompts: int) -> None:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = {
        "task": report.task,
        "preset": report.preset,
        "golden": report.golden,
        "prompts": prompts,
        "seed": options.seed,
        "max_new_tokens": options.max_new_tokens,
        "created": created,
        "methods": [summary.to_dict() for summary in report.summaries],
    }
    report.files["report_json"].write_text(json.dumps(data, indent=2) + "\n")
    header = (
        f"# {report.task}, preset {report.preset}\n\n"
        f"{prompts} prompts, golden reward: {report.golden}, written {created}.\n"
        "Δ and win rate compare each method with `base` on the same prompts.\n\n"
    )
    report.files["report_md"].write_text(header + report.markdown())


def resolved_spec(
    task_name: str, preset: str | None, method: str, registry: Registry | None = None
) -> dict[str, Any]:
    """Return the validated spec of a task's method, with every default filled in."""
    registry = registry or current_registry()
    task = _task(registry, task_name)
    preset = preset or task.default_preset
    _methods(task, preset, [method])
    options = RunOptions(task=task_name)
    return _method_spec(task, preset, method, options, registry).model_dump(mode="json")


def _task(registry: Registry, name: str) -> Task:
    if name not in registry.tasks:
        known = ", ".join(sorted(registry.tasks)) or "none"
        raise SpecError(f"unknown task {name!r}; registered tasks: {known}")
    return registry.tasks[name]


def _methods(
    task: Task, preset: str, requested: list[str] | None, custom: bool = False
) -> list[str]:
    if preset not in task.presets():
        raise SpecError(
            f"unknown preset {preset!r}; presets of this task: "
            f"{', '.join(task.presets())}"
        )
    available = task.methods(preset)
    if custom:
        named = [m for m in requested or [available[0]] if m != "all"]
        return _methods(task, preset, named) + [CUSTOM_METHOD]
    if not requested or requested == ["all"]:
        return available
    unknown = [m for m in requested if m not in available]
    if unknown:
        raise SpecError(
            f"unknown method {unknown[0]!r}; methods: {', '.join(available)} or all"
        )
    return [m for m in available if m in requested]


def _method_spec(
    task: Task, preset: str, method: str, options: RunOptions, registry: Registry
) -> GuidanceSpec:
    if method == CUSTOM_METHOD:
        data = load_spec(options.spec, registry).model_dump()
    else:
        data = task.spec(preset, method)
    sampling = dict(data.get("sampling", {}))
    if options.seed is not None:
        sampling["seed"] = options.seed
    if options.max_new_tokens is not None:
        sampling["max_new_tokens"] = options.max_new_tokens
    try:
        return load_spec({**data, "sampling": sampling}, registry)
    except SpecError as error:
        raise SpecError(f"method {method!r} of preset {preset!r}: {error}") from None


def _evaluator_spec(data: dict, registry: Registry) -> EvaluatorSpec:
    kind = data.get("kind")
    if kind not in registry.evaluators:
        known = ", ".join(sorted(registry.evaluators)) or "none"
        raise SpecError(f"unknown evaluator kind {kind!r}; registered kinds: {known}")
    try:
        return registry.evaluators[kind].model_validate(
            data, context={"registry": registry}
        )
    except ValidationError as error:
        raise SpecError(format_validation_error(error)) from None


def _prompts(task: Task, preset: str, options: RunOptions) -> list[TaskPrompt]:
    prompts = task.load_prompts(preset, options.prompts)
    if options.limit is not None:
        prompts = prompts[: options.limit]
    if not prompts:
        raise SpecError("the prompt source has no prompts; check --prompts and --limit")
    return prompts
