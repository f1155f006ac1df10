"""Tests of the benchmark's workloads and measurements, on a tiny model."""

from __future__ import annotations

import math

import pytest
from conftest import model_ref

from ivg_core import load_spec
from ivg_core.bench import (
    WORKLOADS,
    BenchResult,
    format_table,
    measure_workload,
    run_benchmark,
    workload_spec,
)


@pytest.mark.parametrize("name", list(WORKLOADS), ids=list(WORKLOADS))
def test_workload_specs_validate(name, gpt2_base, registry):
    model = model_ref(gpt2_base)
    spec = load_spec(workload_spec(WORKLOADS[name], model=model), registry)
    floor = load_spec(workload_spec(WORKLOADS[name], floor=True, model=model), registry)

    assert spec.sampling.ignore_eos
    assert spec.search.rows_per_prompt() == WORKLOADS[name].rows_per_prompt
    assert floor.search.kind == "sampling"
    assert floor.chunk_scorers == []


@pytest.mark.parametrize("name", ["a", "c"], ids=["cbs", "best_of_n"])
def test_floor_runs_the_same_models(name, gpt2_base, registry):
    """The floor decodes through every model that the workload runs."""
    model = model_ref(gpt2_base)
    spec = load_spec(workload_spec(WORKLOADS[name], model=model), registry)
    floor = load_spec(workload_spec(WORKLOADS[name], floor=True, model=model), registry)

    templates = {ref.template for ref in _models(spec)}
    assert templates == {ref.template for ref in _models(floor)}


def _models(spec):
    refs = [spec.base]
    for component in [*spec.token_guides, *spec.chunk_scorers]:
        refs += [request.model for request in component.participants()]
    return refs


def test_measure_workload_reports_every_number(gpt2_base):
    prompts = ["The movie", "I loved it", "Boring"]
    result = measure_workload("a", prompts, 1, 1, model_ref(gpt2_base))

    assert result.prompts == 3
    assert result.rows == 48
    assert result.new_tokens == 48 * 50
    assert result.wall_seconds > 0
    assert result.floor_seconds > 0
    assert result.reference_seconds_per_prompt > 0
    assert math.isfinite(result.floor_ratio)
    assert result.reference_speedup > 0
    assert result.peak_memory_mib > 0


def test_bench_result_ratios_and_table():
    result = BenchResult("a", "demo", 4, 64, 3200, 10.0, 8.0, 20.0, 512.0)

    assert result.tokens_per_second == 320.0
    assert result.floor_ratio == 1.25
    assert result.reference_speedup == 8.0
    assert (
        "| a | demo | 4 | 64 | 3200 | 10.0 | 320 | 1.25 | 8.0× | 512 |"
        in format_table([result])
    )


def test_run_benchmark_worker_uses_model(gpt2_base):
    [result] = run_benchmark(["base"], 2, 1, 0, model_ref(gpt2_base))

    assert result.workload == "base"
    assert result.prompts == 2
    assert result.new_tokens == 2 * 50
    assert result.floor_seconds is None


def test_run_benchmark_worker_missing_model(tmp_path):
    missing = str(tmp_path / "no-such-model")

    with pytest.raises(RuntimeError, match="no-such-model"):
        run_benchmark(["base"], 1, 1, 0, {"name_or_path": missing})
