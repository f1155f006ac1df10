"""Task runs: every method of a preset on the same prompts, scored by a golden
evaluator, with generations and a report written to an output folder.

A run decodes its prompts in fixed batches and saves each finished batch at
once, so that running an interrupted command again resumes it (see
``run_folder``), and so that processes launched with accelerate or torchrun
share the batches between them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm.auto import tqdm

from .distributed import Processes, current_processes
from .errors import SpecError
from .extension import BuildContext, Evaluator, Task, TaskPrompt
from .generator import GuidedGenerator
from .models import ModelStore
from .registry import Registry, current_registry
from .report import MethodSummary, format_markdown
from .results import GenerationResult
from .run_folder import BatchRecord, RunFolder, manifest_for
from .run_outputs import finish_run
from .specs import EvaluatorSpec, GuidanceSpec, format_validation_error, load_spec

__all__ = ["RunOptions", "RunReport", "resolved_spec", "run_task"]

logger = logging.getLogger(__name__)

CUSTOM_METHOD = "custom"


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
            Batches are the unit that a resumed run skips or decodes again.
        overwrite: delete the outputs of a different run in ``out_dir``
            instead of stopping with an error.
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
    overwrite: bool = False
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


@dataclass
class RunPlan:
    """A validated run: what to decode, in which batches, scored how."""

    task: Task
    preset: str
    methods: list[str]
    specs: dict[str, GuidanceSpec]
    evaluator: EvaluatorSpec
    prompts: list[TaskPrompt]
    batch_size: int
    options: RunOptions

    def batches(self) -> list[list[TaskPrompt]]:
        """Return the prompts in batches of ``batch_size``, in order."""
        size = self.batch_size
        return [self.prompts[i : i + size] for i in range(0, len(self.prompts), size)]

    def setup(self) -> dict[str, Any]:
        """Return what determines the outputs, for the run manifest."""
        return {
            "task": self.options.task,
            "preset": self.preset,
            "methods": self.methods,
            "specs": {m: s.model_dump(mode="json") for m, s in self.specs.items()},
            "evaluator": self.evaluator.model_dump(mode="json"),
            "prompts": self.options.prompts,
            "limit": self.options.limit,
            "prompt_ids": [p.id for p in self.prompts],
            "batch_size": self.batch_size,
        }


def plan_run(options: RunOptions, registry: Registry | None = None) -> RunPlan:
    """Validate every spec and read the prompts, before any model loads.

    Raises:
        SpecError: an unknown task, preset or method, or an invalid spec.
        DataError: the prompts could not be read.
    """
    registry = registry or current_registry()
    task = _task(registry, options.task)
    preset = options.preset or task.default_preset
    methods = _methods(task, preset, options.methods, options.spec is not None)
    specs = {m: _method_spec(task, preset, m, options, registry) for m in methods}
    evaluator = _evaluator_spec(task.evaluator(preset), registry)
    prompts = _prompts(task, preset, options)
    batch_size = options.batch_size or task.default_batch_size(preset)
    return RunPlan(
        task, preset, methods, specs, evaluator, prompts, batch_size, options
    )


def run_task(options: RunOptions, registry: Registry | None = None) -> RunReport | None:
    """Run methods of a task preset on the same prompts and write the results.

    Every spec is validated, and the prompts are read, before any model loads.
    In a run of several processes, each decodes its share of the batches, and
    the main process merges them and returns the report; the others return
    None.

    Raises:
        SpecError: an unknown task, preset or method, an invalid spec, or an
            output folder that holds a different run.
    """
    registry = registry or current_registry()
    plan = plan_run(options, registry)
    processes = current_processes()
    folder = RunFolder(options.out_dir)
    if processes.is_main and folder.prepare(
        manifest_for(plan.setup()), options.overwrite
    ):
        logger.info("resuming the run in %s", folder.path)
    processes.wait_for_everyone()

    done = folder.done_batches()
    store = ModelStore(registry)
    evaluator = plan.evaluator.build(BuildContext({}, None, store))
    for method in plan.methods:
        _run_method(plan, method, folder, done, processes, store, evaluator, registry)
    processes.wait_for_everyone()
    if not processes.is_main:
        return None
    summaries, golden_name, files = finish_run(plan, folder)
    return RunReport(options.task, plan.preset, summaries, golden_name, files)


def _run_method(
    plan: RunPlan,
    method: str,
    folder: RunFolder,
    done: dict[tuple[str, int], BatchRecord],
    processes: Processes,
    store: ModelStore,
    evaluator: Evaluator,
    registry: Registry,
) -> None:
    batches = plan.batches()
    todo = [
        i
        for i in range(len(batches))
        if i % processes.world_size == processes.rank and (method, i) not in done
    ]
    if not todo:
        return
    logger.info("loading the models of method %r", method)
    generator = GuidedGenerator(plan.specs[method], registry, store=store)
    total = sum(len(batches[i]) for i in todo)
    show = plan.options.progress and processes.is_main
    with tqdm(total=total, desc=method, unit="prompt", disable=not show) as progress:
        for index in todo:
            record = _decode_batch(
                plan, method, index, batches[index], generator, evaluator
            )
            folder.append(processes.rank, record)
            progress.update(len(batches[index]))


def _decode_batch(
    plan: RunPlan,
    method: str,
    index: int,
    batch: list[TaskPrompt],
    generator: GuidedGenerator,
    evaluator: Evaluator,
) -> BatchRecord:
    texts = [p.text for p in batch]
    tokens_before = generator.decoded_tokens
    started = time.perf_counter()
    results = generator.generate(texts, prompt_ids=[p.id for p in batch])
    wall = time.perf_counter() - started
    golden = evaluator.evaluate(
        texts, [r.text for r in results], [p.reference for p in batch]
    )
    seed = plan.specs[method].sampling.seed
    rows = [
        _generation_row(method, prompt, result, score, seed)
        for prompt, result, score in zip(batch, results, golden, strict=True)
    ]
    decoded = generator.decoded_tokens - tokens_before
    return BatchRecord(method, index, rows, wall, decoded)


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
