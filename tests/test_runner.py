"""Tests of task data reading, task runs and their reports, on tiny models."""

from __future__ import annotations

import json
import math
import types

import pytest
from conftest import model_ref

from ivg_core import DataError, SpecError, Task, TaskPrompt, create_registry, hookimpl
from ivg_core.data import read_records, require_column
from ivg_core.report import summarize_method
from ivg_core.runner import RunOptions, run_task
from ivg_tasks.sentiment import SentimentTask, review_opening


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "a.csv",
            "id,text\n1,good film\n2,bad film\n",
            [{"id": "1", "text": "good film"}, {"id": "2", "text": "bad film"}],
        ),
        (
            "a.jsonl",
            '{"prompt": "x"}\n\n{"prompt": "y"}\n',
            [{"prompt": "x"}, {"prompt": "y"}],
        ),
        ("a.json", '[{"prompt": "x"}]', [{"prompt": "x"}]),
        (
            "a.txt",
            "first line\n\nsecond line\n",
            [{"text": "first line"}, {"text": "second line"}],
        ),
    ],
    ids=["csv", "jsonl", "json", "text"],
)
def test_read_records_formats(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    assert read_records(path) == expected


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("empty.csv", b"", "has no records"),
        ("header.csv", b"id,text\n", "has no records"),
        ("latin1.csv", "text\ncaf\xe9\n".encode("latin-1"), "not valid UTF-8"),
        ("bad.jsonl", b'{"prompt": "x"}\n{oops\n', "line 2 is not valid JSON"),
        ("list.jsonl", b"[1, 2]\n", "line 1 is not a JSON object"),
        ("object.json", b'{"prompt": "x"}', "must hold a JSON array of objects"),
    ],
    ids=[
        "missing",
        "empty",
        "header_only",
        "not_utf8",
        "bad_json_line",
        "not_object",
        "json_not_array",
    ],
)
def test_read_records_rejects_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(DataError, match=message):
        read_records(path)


def test_require_column_names_found_columns():
    records = [{"title": "a", "body": "b"}]

    with pytest.raises(
        DataError,
        match=r"no column 'prompt' or 'text'; its columns are \['body', 'title'\]",
    ):
        require_column(records, ["prompt", "text"], "data.csv")


def test_review_opening_strips_breaks():
    review = "Great<br /><br />film, truly   one of the best I have seen."

    assert review_opening(review) == "Great film, truly one of the best I"
    assert review_opening(review, words=2) == "Great film,"


def test_sentiment_prompts_from_imdb_csv(imdb_csv):
    import csv

    with imdb_csv.open(encoding="utf-8") as handle:
        first_review = next(csv.DictReader(handle))["text"]

    prompts = SentimentTask().load_prompts("offline", str(imdb_csv))

    assert len(prompts) == 2000
    assert prompts[0] == TaskPrompt(0, review_opening(first_review))
    assert all(len(p.text.split()) == 8 for p in prompts[:50])
    assert all("<br" not in p.text for p in prompts)


def test_sentiment_prompt_column_used_as_is(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "A b c d e f g h i j"}\n', encoding="utf-8")

    [prompt] = SentimentTask().load_prompts("offline", str(path))

    assert prompt.text == "A b c d e f g h i j"


def test_summarize_method_paired_statistics():
    summary = summarize_method(
        "x", [1.0, 2.0, 3.0, 6.0], [1.0, 1.0, 4.0, 2.0], 40, 160, 2.0
    )

    assert summary.golden_mean == 3.0
    assert summary.golden_se == pytest.approx(math.sqrt(14 / 3 / 4))
    assert summary.delta_vs_baseline == 1.0
    differences = [0.0, 1.0, -1.0, 4.0]
    variance = sum((d - 1.0) ** 2 for d in differences) / 3
    assert summary.delta_se == pytest.approx(math.sqrt(variance / 4))
    assert summary.win_rate == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert summary.tokens_per_second == 20.0
    assert summary.decoded_tokens_per_second == 80.0


class TinyTask(Task):
    """A task on tiny local models: plain sampling against EFT."""

    default_preset = "tiny"

    def __init__(self, base, tuned, untuned):
        self.folders = (base, tuned, untuned)

    def presets(self):
        return ["tiny"]

    def methods(self, preset):
        return ["base", "eft"]

    def spec(self, preset, method):
        base, tuned, untuned = self.folders
        guides = [
            {
                "kind": "eft",
                "tuned": model_ref(tuned),
                "untuned": model_ref(untuned),
                "weight": 2.0,
            }
        ]
        return {
            "base": model_ref(base),
            "sampling": {"max_new_tokens": 5, "seed": 1},
            "token_guides": guides if method == "eft" else [],
        }

    def evaluator(self, preset):
        return {"kind": "vader"}

    def load_prompts(self, preset, source):
        words = ["good", "bad", "fine", "great", "awful"]
        return [TaskPrompt(i, f"The film was {w}.") for i, w in enumerate(words)]


@pytest.fixture
def tiny_registry(gpt2_base, gpt2_tuned, gpt2_untuned):
    @hookimpl
    def ivg_register_tasks(register):
        register("tiny", TinyTask(gpt2_base, gpt2_tuned, gpt2_untuned))

    plugin = types.ModuleType("tiny_task")
    plugin.ivg_register_tasks = ivg_register_tasks
    return create_registry(plugins=[plugin])


def test_run_task_writes_outputs(tmp_path, tiny_registry):
    options = RunOptions(task="tiny", out_dir=tmp_path, batch_size=2, progress=False)

    report = run_task(options, tiny_registry)

    rows = [
        json.loads(line)
        for line in (tmp_path / "generations.jsonl").read_text().splitlines()
    ]
    assert [(r["method"], r["prompt_id"]) for r in rows] == [
        (m, i) for m in ("base", "eft") for i in range(5)
    ]
    data = json.loads((tmp_path / "report.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["base", "eft"]
    base_golden = [r["golden"] for r in rows if r["method"] == "base"]
    eft_golden = [r["golden"] for r in rows if r["method"] == "eft"]
    assert data["methods"][0]["golden_mean"] == pytest.approx(sum(base_golden) / 5)
    assert data["methods"][1]["delta_vs_baseline"] == pytest.approx(
        (sum(eft_golden) - sum(base_golden)) / 5
    )
    assert data["methods"][0]["delta_vs_baseline"] is None
    assert data["methods"][1]["new_tokens"] == sum(
        r["new_tokens"] for r in rows if r["method"] == "eft"
    )
    assert "| eft | 5 |" in (tmp_path / "report.md").read_text()
    assert report.summaries[1].method == "eft"


def test_run_task_seed_override(tmp_path, tiny_registry):
    first = run_task(
        RunOptions(task="tiny", out_dir=tmp_path / "a", seed=3, progress=False),
        tiny_registry,
    )
    second = run_task(
        RunOptions(task="tiny", out_dir=tmp_path / "b", seed=3, progress=False),
        tiny_registry,
    )

    rows_a = (tmp_path / "a" / "generations.jsonl").read_text()
    rows_b = (tmp_path / "b" / "generations.jsonl").read_text()
    assert rows_a == rows_b
    assert all(json.loads(line)["seed"] == 3 for line in rows_a.splitlines())
    assert [s.golden_mean for s in first.summaries] == [
        s.golden_mean for s in second.summaries
    ]


def test_run_task_limit_keeps_prompt_results(tmp_path, tiny_registry):
    run_task(
        RunOptions(task="tiny", out_dir=tmp_path / "all", progress=False), tiny_registry
    )
    run_task(
        RunOptions(task="tiny", out_dir=tmp_path / "two", limit=2, progress=False),
        tiny_registry,
    )

    every = (tmp_path / "all" / "generations.jsonl").read_text().splitlines()
    limited = (tmp_path / "two" / "generations.jsonl").read_text().splitlines()
    responses = {
        (r["method"], r["prompt_id"]): r["response"] for r in map(json.loads, every)
    }
    for row in map(json.loads, limited):
        assert responses[(row["method"], row["prompt_id"])] == row["response"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "nope"}, "unknown task 'nope'; registered tasks: .*tiny"),
        (
            {"task": "tiny", "preset": "big"},
            "unknown preset 'big'; presets of this task: tiny",
        ),
        (
            {"task": "tiny", "methods": ["cbs"]},
            "unknown method 'cbs'; methods: base, eft or all",
        ),
        ({"task": "tiny", "limit": 0}, "has no prompts"),
    ],
    ids=["task", "preset", "method", "no_prompts"],
)
def test_run_task_rejects_bad_options(tmp_path, tiny_registry, options, message):
    with pytest.raises(SpecError, match=message):
        run_task(RunOptions(out_dir=tmp_path, progress=False, **options), tiny_registry)
