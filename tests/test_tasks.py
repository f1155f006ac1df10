"""Tests of the summarize and instruct tasks: prompts, presets, templates, jobs.

The job tests run the real CLI in a subprocess on the offline presets, whose
embedded models convert into the session cache on first use. The other tests
read the real data files beside the checkout and build tiny models on disk.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    BOS,
    OTHER_CORPUS,
    model_ref,
    train_tokenizer,
    write_gpt2,
    write_llama,
)
from rouge_score import rouge_scorer
from transformers import AutoTokenizer

import ivg_core.data
from ivg_core import (
    DataError,
    GuidedGenerator,
    SpecError,
    VocabularyMismatchError,
    create_registry,
    load_spec,
)
from ivg_core.runner import resolved_spec
from ivg_tasks.instruct import InstructTask
from ivg_tasks.summarize import SummarizeTask
from ivg_tasks.summarize.presets import EXAMPLES, GUIDE_TEMPLATE

METHODS = ["base", "bon", "eft", "cbs", "eft+cbs", "ivg"]
CHUNK_METHODS = ["base", "bon", "cbs"]
TOKEN_METHODS = ["eft", "eft+cbs", "ivg"]
JOB_PROMPTS = 3
JOB_MAX_NEW_TOKENS = 6
END_OF_TEXT = "<|endoftext|>"
SCORER_NAMES = {
    "base": set(),
    "bon": {"implicit_value"},
    "eft": set(),
    "cbs": {"implicit_value"},
    "eft+cbs": {"implicit_value"},
    "ivg": {"lm_judge"},
}
ALPACA_KEYS = {"instruction", "output", "generator"}

SUMMARIZE_BASE = "openai-community/gpt2-large"
SUMMARIZE_TUNED = "chadlzx/gpt2-summarize-dpo"
SUMMARIZE_UNTUNED = "chadlzx/gpt2-summarize"
SUMMARIZE_TOKEN_RM = "chadlzx/gpt2-summarize-token-rm"
SUMMARIZE_GOLDEN = "chadlzx/golden_rm_summarize"

INSTRUCT_BASES = {
    "llama2-7b": "meta-llama/Llama-2-7b-chat-hf",
    "llama2-70b": "meta-llama/Llama-2-70b-chat-hf",
    "mistral-7b": "mistralai/Mistral-7B-Instruct-v0.2",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-Instruct-v0.1",
}
INSTRUCT_PAIRS = {
    "tulu": ("allenai/tulu-2-dpo-7b", "allenai/tulu-2-7b"),
    "ultra": ("chadlzx/llama-ultrafeedback-dpo", "meta-llama/Llama-2-7b-hf"),
}
INSTRUCT_TOKEN_RM = "chadlzx/llama-ultrafeedback-token-rm"
OTHER_VOCABULARY_BASES = ("mistral-7b", "mixtral-8x7b")
INSTRUCT_PAPER_METHODS = {
    f"paper-{guide}-{base}": (
        CHUNK_METHODS if base in OTHER_VOCABULARY_BASES else METHODS
    )
    for guide in INSTRUCT_PAIRS
    for base in INSTRUCT_BASES
}
INSTRUCT_PAPER_CASES = [
    (preset, method)
    for preset, methods in INSTRUCT_PAPER_METHODS.items()
    for method in methods
]
INSTRUCT_REJECTED_CASES = [
    (f"paper-{guide}-{base}", method)
    for guide in INSTRUCT_PAIRS
    for base in OTHER_VOCABULARY_BASES
    for method in TOKEN_METHODS
]

# A chat template in the style of Tulu 2 that writes the BOS token itself, so
# an encoded chat prompt must not get a second BOS from the tokenizer.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TULU_STYLE_TEMPLATE = "<|user|>\n{prompt}\n<|assistant|>\n"
SYSTEM_MESSAGE = "Answer in one short sentence."
CHAT_PROMPT = "What makes a film worth watching?"


# Helpers for the CLI jobs.


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


def read_jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def rouge_l(reference: str, response: str) -> float:
    """Return the ROUGE-L F-measure with Porter stemming, as the task reports it."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return scorer.score(reference, response)["rougeL"].fmeasure


def mean_words(responses: list[str]) -> float:
    return sum(len(response.split()) for response in responses) / len(responses)


def table_cells(line: str) -> list[str]:
    """Return the stripped cells of one Markdown table line."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tldr_post_block(record: dict) -> str:
    """Return a TL;DR post in the documented prompt format, written out here."""
    return (
        f"SUBREDDIT: r/{record['subreddit']}\n"
        f"TITLE: {record['title']}\n"
        f"POST: {record['instruction']}"
    )


def tldr_records(shared_data: Path) -> list[dict]:
    return read_jsonl(shared_data / "tldr" / "tldr_test_posts.jsonl")


def ultrafeedback_records(shared_data: Path) -> list[dict]:
    path = shared_data / "instructions" / "ultrafeedback_binarized_eval_clean.jsonl"
    return read_jsonl(path)


def alpaca_eval_records(shared_data: Path) -> list[dict]:
    path = shared_data / "instructions" / "alpaca_eval_example_outputs.json"
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class Job:
    """A finished ``ivg run`` subprocess, its output folder and expected prompts.

    Attributes:
        result: the finished subprocess.
        out: the ``--out`` folder.
        task: the task name.
        methods: the methods the job ran, in report order.
        prompts: the expected prompt text of each prompt id.
        references: the expected reference response of each prompt id.
    """

    result: subprocess.CompletedProcess
    out: Path
    task: str
    methods: list[str]
    prompts: list[str]
    references: list[str]

    def rows(self) -> list[dict]:
        return read_jsonl(self.out / "generations.jsonl")

    def method_rows(self, method: str) -> list[dict]:
        return [row for row in self.rows() if row["method"] == method]

    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text(encoding="utf-8"))

    def markdown(self) -> str:
        return (self.out / "report.md").read_text(encoding="utf-8")

    def alpaca_outputs(self, method: str) -> list:
        name = f"{method.replace('+', '_')}_model_outputs.json"
        path = self.out / "alpaca_eval" / name
        return json.loads(path.read_text(encoding="utf-8"))


def run_job(
    task: str,
    prompts_file: Path,
    cache: Path,
    folder: Path,
    extra_args: list[str],
) -> subprocess.CompletedProcess:
    args = [
        "run",
        task,
        "--prompts",
        str(prompts_file),
        "--limit",
        str(JOB_PROMPTS),
        "--max-new-tokens",
        str(JOB_MAX_NEW_TOKENS),
        "--out",
        str(folder / "out"),
        *extra_args,
    ]
    return run_cli(args, cache, folder)


@pytest.fixture(scope="module")
def summarize_job(embedded_cache, shared_data, tmp_path_factory) -> Job:
    """Run every method of the offline summarize preset on 3 TL;DR posts, once."""
    folder = tmp_path_factory.mktemp("summarize-job")
    prompts_file = shared_data / "tldr" / "tldr_test_posts.jsonl"
    result = run_job("summarize", prompts_file, embedded_cache, folder, [])
    records = tldr_records(shared_data)[:JOB_PROMPTS]
    return Job(
        result,
        folder / "out",
        "summarize",
        METHODS,
        [tldr_post_block(record) for record in records],
        [
            record["gold_response"].replace(END_OF_TEXT, "").strip()
            for record in records
        ],
    )


@pytest.fixture(scope="module")
def instruct_job(embedded_cache, shared_data, tmp_path_factory) -> Job:
    """Run every method of the offline instruct preset on 3 UltraFeedback prompts."""
    folder = tmp_path_factory.mktemp("instruct-job")
    prompts_file = (
        shared_data / "instructions" / "ultrafeedback_binarized_eval_clean.jsonl"
    )
    result = run_job("instruct", prompts_file, embedded_cache, folder, [])
    records = ultrafeedback_records(shared_data)[:JOB_PROMPTS]
    return Job(
        result,
        folder / "out",
        "instruct",
        METHODS,
        [record["prompt"] for record in records],
        [record["chosen"] for record in records],
    )


@pytest.fixture(scope="module")
def alpaca_job(embedded_cache, shared_data, tmp_path_factory) -> Job:
    """Run the base method of the offline instruct preset on AlpacaEval prompts."""
    folder = tmp_path_factory.mktemp("alpaca-job")
    prompts_file = shared_data / "instructions" / "alpaca_eval_example_outputs.json"
    result = run_job(
        "instruct",
        prompts_file,
        embedded_cache,
        folder,
        ["--method", "base"],
    )
    records = alpaca_eval_records(shared_data)[:JOB_PROMPTS]
    return Job(
        result,
        folder / "out",
        "instruct",
        ["base"],
        [record["instruction"] for record in records],
        [record["output"] for record in records],
    )


JOB_FIXTURES = ["summarize_job", "instruct_job", "alpaca_job"]
JOB_IDS = ["summarize", "instruct", "alpaca-eval"]


@pytest.fixture(params=JOB_FIXTURES, ids=JOB_IDS)
def job(request) -> Job:
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["instruct_job", "alpaca_job"], ids=JOB_IDS[1:])
def instruct_style_job(request) -> Job:
    return request.getfixturevalue(request.param)


# Offline jobs through the CLI.


@pytest.mark.slow
def test_task_job_exits_cleanly(job):
    result = job.result

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"outputs written to {job.out}" in result.stderr


@pytest.mark.slow
def test_task_job_rows_per_method(job):
    rows = job.rows()
    methods = [row["method"] for row in rows]

    assert sorted(set(methods)) == sorted(job.methods)
    for method in job.methods:
        prompt_ids = [row["prompt_id"] for row in job.method_rows(method)]
        assert prompt_ids == list(range(JOB_PROMPTS)), method


@pytest.mark.slow
def test_task_job_prompts_match_source(job):
    for method in job.methods:
        prompts = [row["prompt"] for row in job.method_rows(method)]
        assert prompts == job.prompts, method


@pytest.mark.slow
def test_task_job_golden_is_rouge_l(job):
    for row in job.rows():
        label = f"{row['method']} prompt {row['prompt_id']}"
        reference = job.references[row["prompt_id"]]
        assert is_finite_number(row["golden"]), label
        assert 0.0 <= row["golden"] <= 1.0, label
        assert row["golden"] == pytest.approx(rouge_l(reference, row["response"])), (
            label
        )


@pytest.mark.slow
def test_task_job_row_fields(job):
    for row in job.rows():
        label = f"{row['method']} prompt {row['prompt_id']}"
        assert isinstance(row["response"], str), label
        assert set(row["scores"]) == SCORER_NAMES[row["method"]], label
        assert row["finish_reason"] in {"eos", "stop", "length"}, label
        assert 1 <= row["new_tokens"] <= JOB_MAX_NEW_TOKENS, label
        assert row["seed"] == 0, label


@pytest.mark.slow
def test_summarize_job_stops_at_newline(summarize_job):
    for row in summarize_job.rows():
        label = f"{row['method']} prompt {row['prompt_id']}"
        assert "\n" not in row["response"], label


@pytest.mark.slow
def test_task_job_report_json_fields(job):
    report = job.report()

    assert report["task"] == job.task
    assert report["preset"] == "offline"
    assert report["golden"] == "rouge_l"
    assert report["prompts"] == JOB_PROMPTS
    assert report["max_new_tokens"] == JOB_MAX_NEW_TOKENS
    assert [summary["method"] for summary in report["methods"]] == job.methods


@pytest.mark.slow
def test_task_job_report_numbers_finite(job):
    for summary in job.report()["methods"]:
        method = summary["method"]
        responses = [row["response"] for row in job.method_rows(method)]
        assert summary["prompts"] == JOB_PROMPTS, method
        assert is_finite_number(summary["golden_mean"]), method
        assert 0.0 <= summary["golden_mean"] <= 1.0, method
        assert is_finite_number(summary["golden_se"]), method
        assert summary["golden_se"] >= 0, method
        assert is_finite_number(summary["mean_words"]), method
        assert summary["mean_words"] == pytest.approx(mean_words(responses)), method
        assert is_finite_number(summary["tokens_per_second"]), method
        assert summary["tokens_per_second"] > 0, method
        assert is_finite_number(summary["wall_seconds"]), method
        assert summary["wall_seconds"] > 0, method


@pytest.mark.slow
def test_task_job_report_deltas_finite(job):
    summaries = {s["method"]: s for s in job.report()["methods"]}

    assert summaries["base"]["delta_vs_baseline"] is None
    assert summaries["base"]["win_rate"] is None
    for method in job.methods[1:]:
        assert is_finite_number(summaries[method]["delta_vs_baseline"]), method
        assert is_finite_number(summaries[method]["delta_se"]), method
        assert 0.0 <= summaries[method]["win_rate"] <= 1.0, method


@pytest.mark.slow
def test_task_job_report_md_rows(job):
    markdown = job.markdown()
    lines = [line for line in markdown.splitlines() if line.startswith("|")]

    assert markdown.startswith(f"# {job.task}, preset offline\n")
    assert f"{JOB_PROMPTS} prompts, golden reward: rouge_l" in markdown
    assert [table_cells(line)[0] for line in lines[2:]] == job.methods


@pytest.mark.slow
def test_task_job_report_md_words_column(job):
    lines = [line for line in job.markdown().splitlines() if line.startswith("|")]
    header = table_cells(lines[0])
    words_columns = [i for i, cell in enumerate(header) if "words" in cell]

    assert len(table_cells(lines[1])) == len(header)
    assert len(words_columns) == 1, header
    for line in lines[2:]:
        cells = table_cells(line)
        method = cells[0]
        responses = [row["response"] for row in job.method_rows(method)]
        assert len(cells) == len(header), method
        assert cells[words_columns[0]] == f"{mean_words(responses):.1f}", method


@pytest.mark.slow
def test_instruct_job_alpaca_eval_files(instruct_style_job):
    folder = instruct_style_job.out / "alpaca_eval"
    expected = sorted(
        f"{method.replace('+', '_')}_model_outputs.json"
        for method in instruct_style_job.methods
    )

    assert sorted(path.name for path in folder.iterdir()) == expected


@pytest.mark.slow
def test_instruct_job_alpaca_eval_records(instruct_style_job):
    for method in instruct_style_job.methods:
        outputs = instruct_style_job.alpaca_outputs(method)
        responses = [row["response"] for row in instruct_style_job.method_rows(method)]
        assert isinstance(outputs, list), method
        assert len(outputs) == JOB_PROMPTS, method
        for index, output in enumerate(outputs):
            label = f"{method} record {index}"
            assert set(output) == ALPACA_KEYS, label
            assert output["instruction"] == instruct_style_job.prompts[index], label
            assert output["output"] == responses[index], label
            assert output["generator"] == f"ivg-offline-{method}", label


@pytest.mark.slow
def test_alpaca_job_output_is_response(alpaca_job):
    """ROUGE-L reads the example output as reference. The file gets the response."""
    outputs = alpaca_job.alpaca_outputs("base")
    responses = [row["response"] for row in alpaca_job.method_rows("base")]

    assert [output["output"] for output in outputs] == responses
    assert responses != alpaca_job.references


# Prompt loading.


def test_summarize_prompts_from_tldr_posts(shared_data):
    records = tldr_records(shared_data)
    prompts = SummarizeTask().load_prompts(
        "offline", str(shared_data / "tldr" / "tldr_test_posts.jsonl")
    )

    assert len(prompts) == 500
    assert [p.id for p in prompts] == list(range(500))
    assert [p.text for p in prompts] == [tldr_post_block(r) for r in records]
    assert [p.reference for p in prompts] == [
        r["gold_response"].strip() for r in records
    ]


def test_summarize_tldr_references_unlabelled(shared_data):
    path = shared_data / "tldr" / "tldr_test_posts.jsonl"
    prompts = SummarizeTask().load_prompts("offline", str(path))

    for prompt in prompts:
        assert END_OF_TEXT not in prompt.reference, prompt.id
        assert not prompt.reference.startswith("TL;DR"), prompt.id
        assert not prompt.text.endswith("TL;DR:"), prompt.id


def write_jsonl(path: Path, records: list[dict]) -> Path:
    lines = [json.dumps(record) for record in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


POST = "SUBREDDIT: r/cooking\nTITLE: Burnt rice\nPOST: My rice always burns."


@pytest.mark.parametrize(
    ("record", "text", "reference"),
    [
        (
            {"prompt": POST + "\nTL;DR:", "chosen": "TL;DR: rice burns, help"},
            POST,
            "rice burns, help",
        ),
        (
            {"prompt": POST + "\nTL;DR: ", "chosen": "TL;DR:  rice burns<|endoftext|>"},
            POST,
            "rice burns",
        ),
        ({"prompt": POST, "chosen": "rice burns"}, POST, "rice burns"),
        ({"prompt": POST + "\nTL;DR:"}, POST, None),
        (
            {
                "subreddit": "cooking",
                "title": "Burnt rice",
                "instruction": "My rice always burns.",
                "gold_response": " rice burns <|endoftext|>",
            },
            POST,
            "rice burns",
        ),
    ],
    ids=[
        "prompt-and-chosen",
        "trailing-space-and-end-marker",
        "prompt-without-label",
        "prompt-without-chosen",
        "post-columns-with-end-marker",
    ],
)
def test_summarize_prompt_record_formats(tmp_path, record, text, reference):
    path = write_jsonl(tmp_path / "posts.jsonl", [record])

    [prompt] = SummarizeTask().load_prompts("offline", str(path))

    assert prompt.text == text
    assert prompt.reference == reference


def test_summarize_reference_ends_at_marker(tmp_path):
    chosen = "TL;DR: she read my messages.<|endoftext|>Citizens for the Republic"
    path = write_jsonl(tmp_path / "posts.jsonl", [{"prompt": POST, "chosen": chosen}])

    [prompt] = SummarizeTask().load_prompts("offline", str(path))

    assert prompt.reference == "she read my messages."


def test_summarize_unknown_columns_raise(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl", [{"text": "a post", "label": 1}])

    with pytest.raises(DataError, match="neither a 'prompt' column nor the columns"):
        SummarizeTask().load_prompts("offline", str(path))


def test_summarize_hub_prompts_shuffled_and_cut(monkeypatch):
    requests = []

    def fake_load_hub_dataset(dataset, split, shuffle_seed=None, limit=None):
        requests.append((dataset, split, shuffle_seed, limit))
        return [{"prompt": POST + "\nTL;DR:", "chosen": "TL;DR: rice burns"}]

    monkeypatch.setattr(ivg_core.data, "load_hub_dataset", fake_load_hub_dataset)
    prompts = SummarizeTask().load_prompts("paper", None)

    assert requests == [
        ("chadlzx/openai_summarize_comparisons_relabel", "test", 42, 1000)
    ]
    assert [(p.text, p.reference) for p in prompts] == [(POST, "rice burns")]


def test_instruct_prompts_from_ultrafeedback(shared_data):
    records = ultrafeedback_records(shared_data)
    path = shared_data / "instructions" / "ultrafeedback_binarized_eval_clean.jsonl"

    prompts = InstructTask().load_prompts("offline", str(path))

    assert len(prompts) == 200
    assert [p.id for p in prompts] == list(range(200))
    assert [p.text for p in prompts] == [r["prompt"] for r in records]
    assert [p.reference for p in prompts] == [r["chosen"] for r in records]


def test_instruct_prompts_from_alpaca_eval(shared_data):
    records = alpaca_eval_records(shared_data)
    path = shared_data / "instructions" / "alpaca_eval_example_outputs.json"

    prompts = InstructTask().load_prompts("offline", str(path))

    assert len(prompts) == 805
    assert [p.text for p in prompts] == [r["instruction"] for r in records]
    assert [p.reference for p in prompts] == [r["output"] for r in records]


@pytest.mark.parametrize(
    ("chosen", "reference"),
    [
        (
            [
                {"role": "user", "content": "Name a red fruit."},
                {"role": "assistant", "content": "A strawberry."},
            ],
            "A strawberry.",
        ),
        ("A strawberry.", "A strawberry."),
        ([], None),
    ],
    ids=["chat-messages", "string", "empty-messages"],
)
def test_instruct_chosen_reference_formats(tmp_path, chosen, reference):
    record = {"prompt": "Name a red fruit.", "chosen": chosen}
    path = write_jsonl(tmp_path / "pairs.jsonl", [record])

    [prompt] = InstructTask().load_prompts("offline", str(path))

    assert prompt.text == "Name a red fruit."
    assert prompt.reference == reference


def test_instruct_missing_instruction_column_raises(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"question": "Why?"}])

    with pytest.raises(DataError, match="no column 'prompt' or 'instruction'"):
        InstructTask().load_prompts("offline", str(path))


def test_instruct_hub_prompts_alpaca_eval(monkeypatch):
    requests = []

    def fake_load_hub_dataset(dataset, split, shuffle_seed=None, limit=None):
        requests.append((dataset, split))
        return [{"instruction": "Say hi.", "output": "Hi."}]

    monkeypatch.setattr(ivg_core.data, "load_hub_dataset", fake_load_hub_dataset)
    prompts = InstructTask().load_prompts("paper-ultra-llama2-7b", None)

    assert requests == [("tatsu-lab/alpaca_eval", "eval")]
    assert [(p.text, p.reference) for p in prompts] == [("Say hi.", "Hi.")]


@pytest.mark.parametrize(
    "task", [SummarizeTask(), InstructTask()], ids=["summarize", "instruct"]
)
def test_offline_preset_requires_prompts(task):
    with pytest.raises(DataError, match="pass --prompts"):
        task.load_prompts("offline", None)


# Paper presets.


@pytest.fixture
def hub_offline(monkeypatch) -> None:
    """Set HF_HUB_OFFLINE=1, because validating a preset must not need the Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


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


def model_templates(data: object, path: str = "") -> list[tuple[str, str]]:
    """Return (location, template) for every model reference nested in spec data."""
    found = []
    if isinstance(data, dict):
        if "name_or_path" in data:
            found.append((path, data.get("template", "{prompt}")))
        for key, value in data.items():
            found += model_templates(value, f"{path}.{key}")
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found += model_templates(item, f"{path}[{index}]")
    return found


SUMMARIZE_NAMES = {
    "base": {SUMMARIZE_BASE},
    "bon": {SUMMARIZE_BASE, SUMMARIZE_TUNED, SUMMARIZE_UNTUNED},
    "eft": {SUMMARIZE_BASE, SUMMARIZE_TUNED, SUMMARIZE_UNTUNED},
    "cbs": {SUMMARIZE_BASE, SUMMARIZE_TUNED, SUMMARIZE_UNTUNED},
    "eft+cbs": {SUMMARIZE_BASE, SUMMARIZE_TUNED, SUMMARIZE_UNTUNED},
    "ivg": {SUMMARIZE_BASE, SUMMARIZE_TUNED, SUMMARIZE_UNTUNED, SUMMARIZE_TOKEN_RM},
}


@pytest.mark.parametrize("method", METHODS, ids=METHODS)
def test_summarize_paper_spec_checkpoints(hub_offline, method):
    spec = resolved_spec("summarize", "paper", method)

    assert model_names(spec) == SUMMARIZE_NAMES[method]
    assert spec["base"]["name_or_path"] == SUMMARIZE_BASE
    assert spec["base"]["source"] == "huggingface"
    assert spec["base"]["chat"] is False


@pytest.mark.parametrize("method", METHODS, ids=METHODS)
def test_summarize_paper_spec_sampling(hub_offline, method):
    sampling = resolved_spec("summarize", "paper", method)["sampling"]

    assert sampling["max_new_tokens"] == 128
    assert sampling["temperature"] == 0.7
    assert sampling["top_p"] == 1.0
    assert sampling["stop_strings"] == ["\n"]


def test_summarize_paper_base_template(hub_offline):
    template = resolved_spec("summarize", "paper", "base")["base"]["template"]
    examples = template.removesuffix("{prompt}\nTL;DR:")

    assert template.endswith("\n\n{prompt}\nTL;DR:")
    assert examples == EXAMPLES
    assert examples.count("SUBREDDIT: r/relationships\nTITLE: ") == 2
    assert examples.count("\nPOST: ") == 2
    assert examples.count("\nTL;DR: ") == 2
    assert examples.startswith("SUBREDDIT: r/relationships\nTITLE: My [27 F]")


@pytest.mark.parametrize("method", TOKEN_METHODS, ids=TOKEN_METHODS)
def test_summarize_paper_eft_guide(hub_offline, method):
    (guide,) = resolved_spec("summarize", "paper", method)["token_guides"]
    (tuned,) = guide["tuned"]

    assert guide["kind"] == "eft"
    assert guide["weight"] == 1.0
    assert tuned["name_or_path"] == SUMMARIZE_TUNED
    assert tuned["template"] == GUIDE_TEMPLATE
    assert guide["untuned"]["name_or_path"] == SUMMARIZE_UNTUNED
    assert guide["untuned"]["template"] == GUIDE_TEMPLATE


@pytest.mark.parametrize("method", ["cbs", "eft+cbs", "ivg"], ids=str)
def test_summarize_paper_chunk_search(hub_offline, method):
    search = resolved_spec("summarize", "paper", method)["search"]

    assert search == {
        "kind": "chunk_beam_search",
        "beam_width": 4,
        "num_candidates": 4,
        "chunk_length": 5,
    }


def test_summarize_paper_best_of_sixteen(hub_offline):
    spec = resolved_spec("summarize", "paper", "bon")
    (scorer,) = spec["chunk_scorers"]

    assert spec["search"] == {"kind": "best_of_n", "n": 16}
    assert scorer["kind"] == "implicit_value"
    assert scorer["tuned"]["name_or_path"] == SUMMARIZE_TUNED
    assert scorer["untuned"]["name_or_path"] == SUMMARIZE_UNTUNED


def test_summarize_paper_ivg_token_rm(hub_offline):
    (scorer,) = resolved_spec("summarize", "paper", "ivg")["chunk_scorers"]

    assert scorer["kind"] == "token_rm"
    assert scorer["model"]["name_or_path"] == SUMMARIZE_TOKEN_RM
    assert scorer["model"]["template"] == GUIDE_TEMPLATE


def test_summarize_paper_golden_sequence_rm(hub_offline):
    registry = create_registry()
    data = SummarizeTask().evaluator("paper")

    evaluator = registry.evaluators[data["kind"]].model_validate(
        data, context={"registry": registry}
    )

    assert evaluator.kind == "sequence_rm"
    assert evaluator.model.name_or_path == SUMMARIZE_GOLDEN
    assert evaluator.model.template == GUIDE_TEMPLATE
    assert evaluator.append_eos is True


def instruct_names(preset: str, method: str) -> set[str]:
    """Return the checkpoints that a method of an instruct paper preset names."""
    _, guide, base = preset.split("-", 2)
    tuned, untuned = INSTRUCT_PAIRS[guide]
    names = {INSTRUCT_BASES[base]}
    if method != "base":
        names |= {tuned, untuned}
    if method == "ivg":
        names.add(INSTRUCT_TOKEN_RM)
    return names


def test_instruct_paper_preset_names():
    expected = {"offline", *INSTRUCT_PAPER_METHODS}

    assert set(InstructTask().presets()) == expected


@pytest.mark.parametrize(
    "preset", list(INSTRUCT_PAPER_METHODS), ids=list(INSTRUCT_PAPER_METHODS)
)
def test_instruct_paper_preset_methods(preset):
    assert InstructTask().methods(preset) == INSTRUCT_PAPER_METHODS[preset]


@pytest.mark.parametrize(
    ("preset", "method"),
    INSTRUCT_PAPER_CASES,
    ids=[f"{preset}-{method}" for preset, method in INSTRUCT_PAPER_CASES],
)
def test_instruct_paper_spec_checkpoints(hub_offline, preset, method):
    spec = resolved_spec("instruct", preset, method)
    base = INSTRUCT_BASES[preset.split("-", 2)[2]]

    assert model_names(spec) == instruct_names(preset, method)
    assert spec["base"]["name_or_path"] == base
    assert spec["base"]["chat"] is True
    assert spec["sampling"]["temperature"] == 0.7
    assert spec["sampling"]["top_p"] == 1.0


@pytest.mark.parametrize(
    ("preset", "method"),
    [case for case in INSTRUCT_PAPER_CASES if case[1] != "base"],
    ids=[f"{p}-{m}" for p, m in INSTRUCT_PAPER_CASES if m != "base"],
)
def test_instruct_paper_spec_search(hub_offline, preset, method):
    search = resolved_spec("instruct", preset, method)["search"]
    expected = {
        "bon": {"kind": "best_of_n", "n": 4},
        "eft": {"kind": "sampling"},
    }.get(
        method,
        {
            "kind": "chunk_beam_search",
            "beam_width": 2,
            "num_candidates": 2,
            "chunk_length": 30,
        },
    )

    assert search == expected


@pytest.mark.parametrize(
    ("preset", "method"),
    [case for case in INSTRUCT_PAPER_CASES if case[1] in TOKEN_METHODS],
    ids=[f"{p}-{m}" for p, m in INSTRUCT_PAPER_CASES if m in TOKEN_METHODS],
)
def test_instruct_paper_eft_guide(hub_offline, preset, method):
    (guide,) = resolved_spec("instruct", preset, method)["token_guides"]
    (tuned,) = guide["tuned"]
    tuned_name, untuned_name = INSTRUCT_PAIRS[preset.split("-")[1]]

    assert guide["kind"] == "eft"
    assert tuned["name_or_path"] == tuned_name
    assert guide["untuned"]["name_or_path"] == untuned_name


@pytest.mark.parametrize(
    "preset",
    [preset for preset, methods in INSTRUCT_PAPER_METHODS.items() if "ivg" in methods],
    ids=str,
)
def test_instruct_paper_ivg_token_rm(hub_offline, preset):
    (scorer,) = resolved_spec("instruct", preset, "ivg")["chunk_scorers"]

    assert scorer["kind"] == "token_rm"
    assert scorer["model"]["name_or_path"] == INSTRUCT_TOKEN_RM


@pytest.mark.parametrize(
    ("preset", "method"),
    INSTRUCT_REJECTED_CASES,
    ids=[f"{preset}-{method}" for preset, method in INSTRUCT_REJECTED_CASES],
)
def test_instruct_other_vocabulary_rejects_method(hub_offline, preset, method):
    with pytest.raises(SpecError) as caught:
        resolved_spec("instruct", preset, method)

    assert f"unknown method {method!r}" in str(caught.value)
    assert "methods: base, bon, cbs or all" in str(caught.value)


# Template and tokenization agreement for TL;DR.

TLDR_POSTS = 5
TLDR_CORPUS_POSTS = 50


@pytest.fixture(scope="module")
def tldr_gpt2(shared_data, tmp_path_factory) -> Path:
    """A tiny GPT-2 whose byte-level BPE tokenizer is trained on TL;DR text.

    The corpus is the text a guide reads: post, label and summary, joined.
    """
    records = tldr_records(shared_data)[:TLDR_CORPUS_POSTS]
    corpus = [EXAMPLES]
    corpus += [
        GUIDE_TEMPLATE.replace("{prompt}", tldr_post_block(record))
        + " "
        + record["gold_response"].strip()
        for record in records
    ]
    tokenizer = train_tokenizer(corpus, 1000, add_bos=False)
    return write_gpt2(tmp_path_factory.mktemp("tldr-gpt2") / "model", tokenizer, 11)


def tldr_participant(folder: Path, template: str):
    spec = {"base": model_ref(folder, template=template)}
    return GuidedGenerator(spec, create_registry()).base


@pytest.mark.parametrize(
    "index", range(TLDR_POSTS), ids=[f"post-{i}" for i in range(TLDR_POSTS)]
)
def test_guide_template_ids_concatenate(tldr_gpt2, shared_data, index):
    """Prompt ids followed by response ids equal the ids of the joined text.

    The byte-level pre-tokenizer attaches a space to the word after it, so a
    template that ends in ``TL;DR:`` and a response that starts with a space
    split at the same place as the joined text does.
    """
    record = tldr_records(shared_data)[index]
    post = tldr_post_block(record)
    response = " " + record["gold_response"].strip()
    participant = tldr_participant(tldr_gpt2, GUIDE_TEMPLATE)
    joined = GUIDE_TEMPLATE.replace("{prompt}", post) + response

    separate = participant.encode_prompt(post) + participant.encode_text(response)

    assert separate == participant.tokenizer(joined)["input_ids"]


@pytest.mark.parametrize(
    "index", range(TLDR_POSTS), ids=[f"post-{i}" for i in range(TLDR_POSTS)]
)
def test_trailing_space_template_splits_ids(tldr_gpt2, shared_data, index):
    """A template ending in ``TL;DR: `` encodes the space as its own token.

    The joined text is the same, but the prompt ends with a lone space token
    and the response starts with a word without its space, a split that the
    joined text never has. A guide trained on the joined text would score
    token sequences it never saw, and a response that starts with a space,
    as sampled responses do, would put two spaces after the label.
    """
    record = tldr_records(shared_data)[index]
    post = tldr_post_block(record)
    summary = record["gold_response"].strip()
    participant = tldr_participant(tldr_gpt2, GUIDE_TEMPLATE + " ")
    joined = GUIDE_TEMPLATE.replace("{prompt}", post) + " " + summary

    separate = participant.encode_prompt(post) + participant.encode_text(summary)

    first_word = participant.tokenizer.tokenize(" " + summary)[0]
    assert participant.ref.render(post) + summary == joined
    assert first_word != "Ġ", "the tokenizer keeps the space apart from the word"
    assert separate != participant.tokenizer(joined)["input_ids"]


@pytest.mark.parametrize("preset", ["offline", "paper"], ids=str)
def test_summarize_templates_end_with_label(preset):
    task = SummarizeTask()
    specs = {method: task.spec(preset, method) for method in task.methods(preset)}
    templates = model_templates(specs) + model_templates(task.evaluator(preset))

    assert templates
    for location, template in templates:
        assert template.endswith("\nTL;DR:"), location


# Token-level vocabulary check for instruct-style setups.


def write_chat_llama(folder: Path, tokenizer, seed: int) -> Path:
    """Write a tiny Llama whose tokenizer adds BOS and has ``CHAT_TEMPLATE``."""
    write_llama(folder, tokenizer, seed)
    saved = AutoTokenizer.from_pretrained(folder)
    saved.chat_template = CHAT_TEMPLATE
    saved.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_llama(bpe, tmp_path_factory) -> Path:
    return write_chat_llama(tmp_path_factory.mktemp("chat-llama") / "model", bpe, 21)


@pytest.fixture(scope="module")
def other_vocab_llamas(vocab_size, tmp_path_factory) -> tuple[Path, Path]:
    """A tuned and an untuned tiny Llama with another vocabulary of equal size."""
    other = train_tokenizer(OTHER_CORPUS, vocab_size, add_bos=False)
    folder = tmp_path_factory.mktemp("other-vocab-llama")
    tuned = write_llama(folder / "tuned", other, 22)
    untuned = write_llama(folder / "untuned", other, 23)
    return tuned, untuned


def test_other_vocab_tokenizers_same_size(chat_llama, other_vocab_llamas):
    base = AutoTokenizer.from_pretrained(chat_llama)
    guide = AutoTokenizer.from_pretrained(other_vocab_llamas[0])

    assert len(base) == len(guide)
    assert base.get_vocab() != guide.get_vocab()


def test_token_guide_other_vocab_rejected(chat_llama, other_vocab_llamas):
    tuned, untuned = other_vocab_llamas
    spec = {
        "base": model_ref(chat_llama, chat=True),
        "token_guides": [
            {
                "kind": "eft",
                "tuned": model_ref(tuned, template=TULU_STYLE_TEMPLATE),
                "untuned": model_ref(untuned, template=TULU_STYLE_TEMPLATE),
            }
        ],
    }

    with pytest.raises(VocabularyMismatchError) as caught:
        GuidedGenerator(spec, create_registry())
    assert repr(str(chat_llama)) in str(caught.value)
    assert repr(str(tuned)) in str(caught.value)


def test_chunk_scorer_other_vocab_accepted(chat_llama, other_vocab_llamas):
    tuned, untuned = other_vocab_llamas
    spec = {
        "base": model_ref(chat_llama, chat=True),
        "sampling": {"max_new_tokens": 6, "seed": 3},
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(tuned, template=TULU_STYLE_TEMPLATE),
                "untuned": model_ref(untuned, template=TULU_STYLE_TEMPLATE),
            }
        ],
        "search": {
            "kind": "chunk_beam_search",
            "beam_width": 2,
            "num_candidates": 2,
            "chunk_length": 3,
        },
    }
    generator = GuidedGenerator(spec, create_registry())

    results = generator.generate([CHAT_PROMPT, "Name a quiet drama."])

    guides = generator.participants[1:]
    assert [(p.level, p.shares_base_vocabulary) for p in guides] == [
        ("chunk", False),
        ("chunk", False),
    ]
    assert len(results) == 2
    for index, result in enumerate(results):
        assert set(result.scores) == {"implicit_value"}, index
        assert is_finite_number(result.scores["implicit_value"]), index
        assert 1 <= len(result.token_ids) <= 6, index
        assert max(result.token_ids) < generator.vocab_size, index


# Chat templates.


def test_chat_prompt_matches_chat_template(chat_llama):
    spec = {"base": model_ref(chat_llama, chat=True, system=SYSTEM_MESSAGE)}
    participant = GuidedGenerator(spec, create_registry()).base
    tokenizer = AutoTokenizer.from_pretrained(chat_llama)
    messages = [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": CHAT_PROMPT},
    ]
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]

    ids = participant.encode_prompt(CHAT_PROMPT)

    assert text.startswith(BOS + "<|system|>\n" + SYSTEM_MESSAGE)
    assert text.endswith(CHAT_PROMPT + "\n<|assistant|>\n")
    assert ids == expected
    assert ids.count(tokenizer.bos_token_id) == 1


def test_chat_without_template_rejected(llama_base, tmp_path):
    # The weights are unreadable, so loading them before the check would fail.
    folder = tmp_path / "no-chat-template"
    shutil.copytree(llama_base, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    spec = {"base": model_ref(folder, chat=True)}

    with pytest.raises(SpecError, match="has chat set, but its tokenizer has no chat"):
        GuidedGenerator(spec, create_registry())


def test_system_without_chat_rejected(llama_base):
    spec = {"base": model_ref(llama_base, system=SYSTEM_MESSAGE)}

    with pytest.raises(SpecError, match="system is set but chat is false"):
        load_spec(spec, create_registry())
