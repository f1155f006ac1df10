"""Benchmark of guided decoding against its cost floor and the reference path.

Each workload runs in its own subprocess, so that its peak memory is its own:
a warm-up, then ``repeats`` timed runs of the fast path, of the floor (plain
batched sampling through the same participants on the same rows and tokens)
and of the reference path on a few prompts. Every run decodes exactly
``max_new_tokens`` per row (EOS is ignored), so the token counts match.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["BenchResult", "WORKLOADS", "format_table", "run_benchmark"]

MODEL = {"name_or_path": "smollm2-135m-instruct", "source": "embedded"}
TUNED_TEMPLATE = (
    "Here is a glowing, enthusiastic movie review from imdb by a viewer who "
    "loved every minute: {prompt}"
)
BASE_TEMPLATE = "Here is a movie review from imdb: {prompt}"


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: a search over a prompted pair of one model."""

    name: str
    description: str
    eft: bool
    search: dict[str, Any]
    rows_per_prompt: int
    max_new_tokens: int


WORKLOADS = {
    "a": Workload(
        "a",
        "EFT + CBS (implicit value), W=4 K=4 L=5, 50 tokens",
        True,
        {
            "kind": "chunk_beam_search",
            "beam_width": 4,
            "num_candidates": 4,
            "chunk_length": 5,
        },
        16,
        50,
    ),
    "b": Workload(
        "b",
        "EFT + CBS (implicit value), W=4 K=4 L=5, 100 tokens",
        True,
        {
            "kind": "chunk_beam_search",
            "beam_width": 4,
            "num_candidates": 4,
            "chunk_length": 5,
        },
        16,
        100,
    ),
    "c": Workload(
        "c",
        "best-of-16 (implicit value), 50 tokens",
        False,
        {"kind": "best_of_n", "n": 16},
        16,
        50,
    ),
    "base": Workload(
        "base", "plain sampling, base model alone", False, {"kind": "sampling"}, 1, 50
    ),
    "pair": Workload(
        "pair",
        "EFT sampling, prompted pair of one model",
        True,
        {"kind": "sampling"},
        1,
        50,
    ),
}


@dataclass
class BenchResult:
    """Measurements of one workload; times are medians over the repeats."""

    workload: str
    description: str
    prompts: int
    rows: int
    new_tokens: int
    wall_seconds: float
    floor_seconds: float | None
    reference_seconds_per_prompt: float | None
    peak_memory_mib: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_seconds

    @property
    def floor_ratio(self) -> float | None:
        return self.wall_seconds / self.floor_seconds if self.floor_seconds else None

    @property
    def reference_speedup(self) -> float | None:
        if self.reference_seconds_per_prompt is None:
            return None
        return self.reference_seconds_per_prompt * self.prompts / self.wall_seconds


def workload_spec(
    workload: Workload, floor: bool = False, model: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the spec of a workload, or of its floor.

    Args:
        workload: the workload.
        floor: return the spec of its floor instead.
        model: a model reference without template; default: SmolLM2-135M.
    """
    model = model or MODEL
    base = {**model, "template": BASE_TEMPLATE}
    tuned = {**model, "template": TUNED_TEMPLATE}
    spec: dict[str, Any] = {
        "base": base,
        "sampling": {
            "max_new_tokens": workload.max_new_tokens,
            "temperature": 0.7,
            "ignore_eos": True,
        },
        "token_guides": [],
        "chunk_scorers": [],
        "search": {"kind": "sampling"},
    }
    if workload.eft:
        spec["token_guides"] = [
            {"kind": "eft", "tuned": tuned, "untuned": base, "weight": 2.0}
        ]
    if not floor and workload.rows_per_prompt > 1:
        spec["chunk_scorers"] = [
            {"kind": "implicit_value", "tuned": tuned, "untuned": base}
        ]
        spec["search"] = workload.search
    elif floor and not workload.eft and workload.rows_per_prompt > 1:
        # The floor of best-of-N runs the scorer's model over the same tokens.
        spec["token_guides"] = [
            {"kind": "eft", "tuned": tuned, "untuned": base, "weight": 0.0}
        ]
    return spec


def measure_workload(
    name: str,
    prompts: list[str],
    repeats: int,
    reference_prompts: int,
    model: dict[str, Any] | None = None,
) -> BenchResult:
    """Run one workload in this process and return its measurements."""
    from .generator import GuidedGenerator

    workload = WORKLOADS[name]
    generator = GuidedGenerator(workload_spec(workload, model=model))
    generator.generate(prompts[:2])  # warm-up: first calls allocate and tune
    wall = _median_seconds(lambda: generator.generate(prompts), repeats)

    floor = None
    if workload.rows_per_prompt > 1:
        floor_generator = GuidedGenerator(
            workload_spec(workload, floor=True, model=model), store=generator.store
        )
        floor_prompts = [p for p in prompts for _ in range(workload.rows_per_prompt)]
        floor_generator.generate(floor_prompts[:2])
        floor = _median_seconds(
            lambda: floor_generator.generate(floor_prompts), repeats
        )

    reference = None
    if reference_prompts and workload.rows_per_prompt > 1:
        subset = prompts[:reference_prompts]
        seconds = _median_seconds(
            lambda: generator.generate(subset, reference=True), max(1, repeats // 3)
        )
        reference = seconds / len(subset)

    rows = len(prompts) * workload.rows_per_prompt
    return BenchResult(
        workload=name,
        description=workload.description,
        prompts=len(prompts),
        rows=rows,
        new_tokens=rows * workload.max_new_tokens,
        wall_seconds=wall,
        floor_seconds=floor,
        reference_seconds_per_prompt=reference,
        peak_memory_mib=_peak_memory_mib(),
    )


def run_benchmark(
    workloads: list[str],
    prompt_count: int,
    repeats: int,
    reference_prompts: int,
    model: dict[str, Any] | None = None,
) -> list[BenchResult]:
    """Run each workload in a subprocess and return their results in order."""
    results = []
    for name in workloads:
        command = [
            sys.executable,
            "-m",
            "ivg_core.bench",
            name,
            str(prompt_count),
            str(repeats),
            str(reference_prompts),
            json.dumps(model or MODEL),
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"benchmark workload {name!r} failed:\n{completed.stderr[-3000:]}"
            )
        results.append(BenchResult(**json.loads(completed.stdout.splitlines()[-1])))
    return results


def format_table(results: list[BenchResult]) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| workload | method | prompts | rows | new tokens | wall s | tokens/s "
        "| ratio to floor | speed-up over reference | peak memory MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.floor_ratio:.2f}" if r.floor_ratio is not None else "–"
        speedup = f"{r.reference_speedup:.1f}×" if r.reference_speedup else "–"
        lines.append(
            f"| {r.workload} | {r.description} | {r.prompts} | {r.rows} "
            f"| {r.new_tokens} | {r.wall_seconds:.1f} | {r.tokens_per_second:.0f} "
            f"| {ratio} | {speedup} | {r.peak_memory_mib:.0f} |"
        )
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    """Return the CPU model, core count and library versions, for the record."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [
                line.split(":", 1)[1].strip()
                for line in handle
                if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    return f"{cpu}, {threads} threads, {device}; {versions}"


def model_reference(name_or_path: str) -> dict[str, Any]:
    """Return a model reference for an embedded model name or a local folder."""
    from ivg_plugins.embedded import EMBEDDED_MODELS

    if name_or_path in EMBEDDED_MODELS:
        return {"name_or_path": name_or_path, "source": "embedded"}
    return {"name_or_path": name_or_path}


def benchmark_prompts(count: int) -> list[str]:
    """Return ``count`` review openings shipped with the sentiment task."""
    from ivg_tasks.sentiment import SentimentTask

    prompts = SentimentTask().load_prompts("offline", "builtin")
    return [prompts[i % len(prompts)].text for i in range(count)]


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _peak_memory_mib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(argv: list[str]) -> None:
    name, count, repeats, reference_prompts = argv[0], *map(int, argv[1:4])
    model = json.loads(argv[4]) if len(argv) > 4 else None
    result = measure_workload(
        name, benchmark_prompts(count), repeats, reference_prompts, model
    )
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    _worker(sys.argv[1:])
