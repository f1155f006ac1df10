"""Tests of the sentiment task: its presets, prompts and ``ivg run`` jobs.

The job tests run the real CLI in a subprocess on the offline preset, whose
embedded models convert into the session cache on first use. The conversion
took about 25 seconds for SmolLM2 and 75 seconds for Gemma on two CPU cores.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import ivg_core.data
from ivg_core import GuidanceSpec, load_spec
from ivg_core.runner import resolved_spec
from ivg_tasks.sentiment import SentimentTask

METHODS = ["base", "bon", "eft", "cbs", "eft+cbs", "ivg"]
JOB_PROMPTS = 8
JOB_MAX_NEW_TOKENS = 6
ROW_KEYS = {
    "prompt_id",
    "method",
    "prompt",
    "response",
    "golden",
    "scores",
    "score",
    "finish_reason",
    "new_tokens",
    "seed",
}
SCORER_NAMES = {
    "base": set(),
    "bon": {"implicit_value"},
    "eft": set(),
    "cbs": {"implicit_value"},
    "eft+cbs": {"implicit_value"},
    "ivg": {"lm_judge"},
}
FIRST_IMDB_OPENING = "There is no relation at all between Fortier"
TABLE_HEADER = "| method | prompts | vader mean ± SE |"

PAPER_BASE = "openai-community/gpt2-large"
PAPER_TUNED = "chadlzx/gpt2-imdb-dpo"
PAPER_UNTUNED = "lvwerra/gpt2-imdb"
PAPER_TOKEN_RM = "chadlzx/gpt2-imdb-token-rm"
PAPER_GOLDEN = "lvwerra/distilbert-imdb"


def ivg_env(cache: Path) -> dict[str, str]:
    """Return the environment of a CLI subprocess: the session cache, no Hub."""
    return {**os.environ, "IVG_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}


def run_cli(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m ivg ARGS`` and capture its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "ivg", *args],
        env=ivg_env(cache),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def read_rows(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def table_methods(markdown: str) -> list[str]:
    """Return the first cell of each body row of the Markdown table."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    return [row.split("|")[1].strip() for row in rows[2:]]


def csv_openings(path: Path, count: int) -> list[str]:
    """Return the first 8 words of the first ``count`` reviews, without <br />."""
    with path.open(encoding="utf-8", newline="") as handle:
        reviews = [
            row["text"] for row in itertools.islice(csv.DictReader(handle), count)
        ]
    openings = []
    for review in reviews:
        words = re.sub(r"<br\s*/?>", " ", review).split()
        openings.append(" ".join(words[:8]))
    return openings


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass
class Job:
    """A finished ``ivg run sentiment`` subprocess and its output folder."""

    result: subprocess.CompletedProcess
    out: Path

    def rows(self) -> list[dict]:
        return read_rows(self.out / "generations.jsonl")

    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def offline_job(embedded_cache, imdb_csv, tmp_path_factory) -> Job:
    """Run every method of the offline preset on 8 IMDB openings, once."""
    folder = tmp_path_factory.mktemp("sentiment-job")
    out = folder / "out"
    args = [
        "run",
        "sentiment",
        "--prompts",
        str(imdb_csv),
        "--limit",
        str(JOB_PROMPTS),
        "--max-new-tokens",
        str(JOB_MAX_NEW_TOKENS),
        "--out",
        str(out),
    ]
    return Job(run_cli(args, embedded_cache, folder), out)


@pytest.mark.slow
def test_offline_job_exits_cleanly(offline_job):
    result = offline_job.result

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"outputs written to {offline_job.out}" in result.stderr


@pytest.mark.slow
def test_offline_job_prints_markdown_table(offline_job):
    stdout = offline_job.result.stdout

    assert stdout.startswith(TABLE_HEADER), stdout
    assert table_methods(stdout) == METHODS
    assert f"| base | {JOB_PROMPTS} |" in stdout


@pytest.mark.slow
def test_offline_job_writes_rows_per_method(offline_job):
    rows = offline_job.rows()
    methods = [row["method"] for row in rows]

    assert sorted(set(methods)) == sorted(METHODS)
    for method in METHODS:
        assert methods.count(method) == JOB_PROMPTS, method


@pytest.mark.slow
def test_offline_job_same_prompts_per_method(offline_job, imdb_csv):
    rows = offline_job.rows()
    expected = csv_openings(imdb_csv, JOB_PROMPTS)

    assert expected[0] == FIRST_IMDB_OPENING
    for method in METHODS:
        chosen = [row for row in rows if row["method"] == method]
        assert [row["prompt_id"] for row in chosen] == list(range(JOB_PROMPTS))
        assert [row["prompt"] for row in chosen] == expected, method


@pytest.mark.slow
def test_offline_job_row_fields(offline_job):
    for row in offline_job.rows():
        label = f"{row['method']} prompt {row['prompt_id']}"
        assert set(row) == ROW_KEYS, label
        assert isinstance(row["response"], str), label
        assert -1.0 <= row["golden"] <= 1.0, label
        assert set(row["scores"]) == SCORER_NAMES[row["method"]], label
        assert (row["score"] is None) == (not row["scores"]), label
        assert row["finish_reason"] in {"eos", "stop", "length"}, label
        assert 1 <= row["new_tokens"] <= JOB_MAX_NEW_TOKENS, label
        assert row["seed"] == 0, label


@pytest.mark.slow
def test_offline_job_responses_not_empty(offline_job):
    responses = [row["response"] for row in offline_job.rows()]

    assert all(response.strip() for response in responses), responses


@pytest.mark.slow
def test_offline_job_report_json_fields(offline_job):
    report = offline_job.report()

    assert report["task"] == "sentiment"
    assert report["preset"] == "offline"
    assert report["golden"] == "vader"
    assert report["prompts"] == JOB_PROMPTS
    assert report["max_new_tokens"] == JOB_MAX_NEW_TOKENS
    assert [summary["method"] for summary in report["methods"]] == METHODS


@pytest.mark.slow
def test_offline_job_report_numbers_finite(offline_job):
    for summary in offline_job.report()["methods"]:
        method = summary["method"]
        assert summary["prompts"] == JOB_PROMPTS, method
        assert is_finite_number(summary["golden_mean"]), method
        assert is_finite_number(summary["golden_se"]), method
        assert summary["golden_se"] >= 0, method
        assert is_finite_number(summary["tokens_per_second"]), method
        assert summary["tokens_per_second"] > 0, method
        assert is_finite_number(summary["wall_seconds"]), method
        assert summary["wall_seconds"] > 0, method


@pytest.mark.slow
def test_offline_job_report_deltas_against_base(offline_job):
    summaries = {s["method"]: s for s in offline_job.report()["methods"]}

    assert summaries["base"]["delta_vs_baseline"] is None
    assert summaries["base"]["win_rate"] is None
    for method in METHODS[1:]:
        assert is_finite_number(summaries[method]["delta_vs_baseline"]), method
        assert is_finite_number(summaries[method]["delta_se"]), method
        assert 0.0 <= summaries[method]["win_rate"] <= 1.0, method


@pytest.mark.slow
def test_offline_job_report_matches_rows(offline_job):
    rows = offline_job.rows()
    summaries = {s["method"]: s for s in offline_job.report()["methods"]}
    base = [row["golden"] for row in rows if row["method"] == "base"]

    for method in METHODS:
        golden = [row["golden"] for row in rows if row["method"] == method]
        tokens = sum(row["new_tokens"] for row in rows if row["method"] == method)
        summary = summaries[method]
        mean = sum(golden) / len(golden)
        assert summary["golden_mean"] == pytest.approx(mean), method
        assert summary["new_tokens"] == tokens, method
        assert summary["decoded_tokens"] >= tokens, method
        if method != "base":
            delta = (sum(golden) - sum(base)) / len(golden)
            assert summary["delta_vs_baseline"] == pytest.approx(delta), method


@pytest.mark.slow
def test_offline_job_report_md_names_methods(offline_job):
    markdown = (offline_job.out / "report.md").read_text(encoding="utf-8")

    assert markdown.startswith("# sentiment, preset offline\n")
    assert f"{JOB_PROMPTS} prompts, golden reward: vader" in markdown
    assert table_methods(markdown) == METHODS
    for method in METHODS:
        assert f"| {method} |" in markdown, method


def test_job_runs_only_requested_methods(embedded_cache, imdb_csv, tmp_path):
    out = tmp_path / "out"
    args = ["run", "sentiment", "--prompts", str(imdb_csv), "--limit", "2"]
    args += ["--max-new-tokens", "3", "--method", "eft", "--method", "base"]
    result = run_cli([*args, "--out", str(out)], embedded_cache, tmp_path)

    assert result.returncode == 0, result.stderr
    rows = read_rows(out / "generations.jsonl")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [row["method"] for row in rows] == ["base"] * 2 + ["eft"] * 2
    assert [s["method"] for s in report["methods"]] == ["base", "eft"]
    assert table_methods(result.stdout) == ["base", "eft"]
    assert is_finite_number(report["methods"][1]["delta_vs_baseline"])


def write_csv_without_text(folder: Path) -> str:
    path = folder / "no-text.csv"
    path.write_text("id,body\n1,a fine film\n", encoding="utf-8")
    return str(path)


def write_empty_file(folder: Path) -> str:
    path = folder / "empty.csv"
    path.write_bytes(b"")
    return str(path)


def write_header_only_csv(folder: Path) -> str:
    path = folder / "header-only.csv"
    path.write_text("text,label\n", encoding="utf-8")
    return str(path)


def write_latin1_file(folder: Path) -> str:
    path = folder / "latin-1.csv"
    path.write_bytes("text\nun film très réussi\n".encode("latin-1"))
    return str(path)


def missing_file(folder: Path) -> str:
    return str(folder / "missing.csv")


@pytest.mark.parametrize(
    ("args", "write_prompts", "status", "message"),
    [
        (["no-such-task"], None, 1, "unknown task 'no-such-task'"),
        (["sentiment", "--preset", "huge"], None, 1, "unknown preset 'huge'"),
        (["sentiment", "--method", "dpo"], None, 1, "unknown method 'dpo'"),
        (["sentiment"], missing_file, 1, "does not exist"),
        (["sentiment"], write_csv_without_text, 1, "no column 'prompt' or 'text'"),
        (["sentiment"], write_empty_file, 1, "has no records"),
        (["sentiment"], write_header_only_csv, 1, "has no records"),
        (["sentiment"], write_latin1_file, 1, "is not valid UTF-8"),
        (["sentiment", "--limit", "0"], None, 2, "Invalid value for '--limit'"),
    ],
    ids=[
        "unknown-task",
        "unknown-preset",
        "unknown-method",
        "missing-file",
        "no-text-column",
        "empty-file",
        "header-only-csv",
        "not-utf8",
        "zero-limit",
    ],
)
def test_run_bad_input_fails_cleanly(
    embedded_cache, tmp_path, args, write_prompts, status, message
):
    out = tmp_path / "out"
    prompts = ["--prompts", write_prompts(tmp_path)] if write_prompts else []
    result = run_cli(
        ["run", *args, *prompts, "--out", str(out)], embedded_cache, tmp_path
    )

    assert result.returncode == status
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not out.exists()


@pytest.fixture
def paper_specs(monkeypatch) -> dict[str, dict]:
    """Return the validated paper-preset spec of every method, without the Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {method: resolved_spec("sentiment", "paper", method) for method in METHODS}


def model_names(data: object) -> set[str]:
    """Return every ``name_or_path`` value nested in spec data."""
    if isinstance(data, dict):
        names = {data["name_or_path"]} if "name_or_path" in data else set()
        for value in data.values():
            names |= model_names(value)
        return names
    if isinstance(data, list):
        return set().union(*(model_names(item) for item in data))
    return set()


def test_paper_specs_name_exact_checkpoints(paper_specs):
    names = set().union(*(model_names(spec) for spec in paper_specs.values()))
    golden = model_names(SentimentTask().evaluator("paper"))

    assert names == {PAPER_BASE, PAPER_TUNED, PAPER_UNTUNED, PAPER_TOKEN_RM}
    assert golden == {PAPER_GOLDEN}


@pytest.mark.parametrize("method", METHODS, ids=METHODS)
def test_paper_spec_base_and_sampling(paper_specs, method):
    spec = paper_specs[method]

    assert spec["base"]["name_or_path"] == PAPER_BASE
    assert spec["base"]["source"] == "huggingface"
    assert spec["base"]["template"] == "Here is a movie review from imdb: {prompt}"
    assert spec["sampling"]["max_new_tokens"] == 50
    assert spec["sampling"]["temperature"] == 0.7
    assert spec["sampling"]["top_k"] is None


@pytest.mark.parametrize("method", ["eft", "eft+cbs", "ivg"], ids=str)
def test_paper_spec_eft_guide(paper_specs, method):
    (guide,) = paper_specs[method]["token_guides"]
    (tuned,) = guide["tuned"]

    assert guide["kind"] == "eft"
    assert guide["weight"] == 1.0
    assert tuned["name_or_path"] == PAPER_TUNED
    assert tuned["template"] == "{prompt}"
    assert guide["untuned"]["name_or_path"] == PAPER_UNTUNED
    assert guide["untuned"]["template"] == "{prompt}"


@pytest.mark.parametrize("method", ["cbs", "eft+cbs", "ivg"], ids=str)
def test_paper_spec_chunk_beam_search(paper_specs, method):
    search = paper_specs[method]["search"]

    assert search["kind"] == "chunk_beam_search"
    assert search["beam_width"] == 4
    assert search["num_candidates"] == 4
    assert search["chunk_length"] == 5


@pytest.mark.parametrize("method", ["bon", "cbs", "eft+cbs"], ids=str)
def test_paper_spec_implicit_value_scorer(paper_specs, method):
    (scorer,) = paper_specs[method]["chunk_scorers"]

    assert scorer["kind"] == "implicit_value"
    assert scorer["tuned"]["name_or_path"] == PAPER_TUNED
    assert scorer["untuned"]["name_or_path"] == PAPER_UNTUNED


def test_paper_spec_ivg_token_rm(paper_specs):
    (scorer,) = paper_specs["ivg"]["chunk_scorers"]

    assert scorer["kind"] == "token_rm"
    assert scorer["model"]["name_or_path"] == PAPER_TOKEN_RM
    assert scorer["model"]["source"] == "huggingface"


def test_paper_spec_plain_methods(paper_specs):
    assert paper_specs["base"]["token_guides"] == []
    assert paper_specs["base"]["chunk_scorers"] == []
    assert paper_specs["base"]["search"]["kind"] == "sampling"
    assert paper_specs["eft"]["chunk_scorers"] == []
    assert paper_specs["eft"]["search"]["kind"] == "sampling"
    assert paper_specs["bon"]["token_guides"] == []
    assert paper_specs["bon"]["search"] == {"kind": "best_of_n", "n": 16}


def test_paper_golden_is_distilbert():
    evaluator = SentimentTask().evaluator("paper")

    assert evaluator["kind"] == "classifier"
    assert evaluator["model"]["name_or_path"] == PAPER_GOLDEN
    assert evaluator["positive"] == "POSITIVE"


def test_paper_default_prompts_from_hub(monkeypatch):
    requests = []

    def fake_load_hub_dataset(dataset: str, split: str, **options) -> list[dict]:
        requests.append((dataset, split))
        return [{"text": "one two three four five six seven eight nine ten"}]

    monkeypatch.setattr(ivg_core.data, "load_hub_dataset", fake_load_hub_dataset)
    prompts = SentimentTask().load_prompts("paper", None)

    assert requests == [("ZHZisZZ/imdb_preference", "test")]
    assert [p.text for p in prompts] == ["one two three four five six seven eight"]


def test_spec_show_prints_loadable_json(embedded_cache, tmp_path):
    args = ["spec", "show", "sentiment", "--preset", "offline", "--method", "ivg"]
    result = run_cli(args, embedded_cache, tmp_path)

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    spec = load_spec(data)
    assert isinstance(spec, GuidanceSpec)
    assert spec.model_dump(mode="json") == data
    assert spec.base.name_or_path == "smollm2-135m-instruct"
    assert [scorer.kind for scorer in spec.chunk_scorers] == ["lm_judge"]
    assert spec.search.kind == "chunk_beam_search"


def test_builtin_prompts_unique_openings():
    prompts = SentimentTask().load_prompts("offline", "builtin")
    texts = [prompt.text for prompt in prompts]
    word_counts = [len(text.split()) for text in texts]

    assert len(prompts) >= 64
    assert len(set(texts)) == len(texts)
    assert [prompt.id for prompt in prompts] == list(range(len(prompts)))
    assert min(word_counts) >= 6
    assert max(word_counts) <= 10


def test_offline_default_prompts_builtin():
    task = SentimentTask()

    assert task.load_prompts("offline", None) == task.load_prompts("offline", "builtin")
