"""Interrupted, resumed and multi-process runs, through real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLUGIN_SOURCE = '''
"""A tiny task for run tests: two methods on small local models."""

import json
import os
import time
from typing import Literal

from ivg_core import Evaluator, EvaluatorSpec, Task, TaskPrompt, hookimpl

MODELS = json.loads(os.environ["IVG_TINY_MODELS"])
PAUSE = float(os.environ.get("IVG_TINY_PAUSE", "0"))


def ref(name, **fields):
    return {"name_or_path": MODELS[name], "dtype": "float64", "device": "cpu", **fields}


class PausedWordsSpec(EvaluatorSpec):
    kind: Literal["paused_words"] = "paused_words"

    def build(self, context):
        return PausedWords()


class PausedWords(Evaluator):
    """Counts words after a pause, so that a test can stop a run mid-way."""

    def evaluate(self, prompts, responses, references=None):
        time.sleep(PAUSE)
        return [float(len(r.split())) for r in responses]


class TinyTask(Task):
    default_preset = "tiny"

    def presets(self):
        return ["tiny"]

    def methods(self, preset):
        return ["base", "eft"]

    def spec(self, preset, method):
        guides = [{"kind": "eft", "tuned": ref("tuned"), "untuned": ref("untuned")}]
        return {
            "base": ref("base"),
            "sampling": {"max_new_tokens": 6, "seed": 3},
            "token_guides": guides if method == "eft" else [],
        }

    def evaluator(self, preset):
        return {"kind": "paused_words"}

    def load_prompts(self, preset, source):
        words = ["good", "bad", "fine", "great", "awful", "odd", "new", "old"]
        return [TaskPrompt(i, f"The film was {w}") for i, w in enumerate(words * 2)]


@hookimpl
def ivg_register_tasks(register):
    register("tiny", TinyTask())


@hookimpl
def ivg_register_evaluators(register):
    register(PausedWordsSpec)
'''


@pytest.fixture(scope="module")
def tiny_environment(tmp_path_factory, gpt2_base, gpt2_tuned, gpt2_untuned) -> dict:
    """An environment whose Python finds the tiny task as an installed plugin."""
    folder = tmp_path_factory.mktemp("tiny-task-plugin")
    (folder / "ivg_tiny_task.py").write_text(PLUGIN_SOURCE)
    info = folder / "ivg_tiny_task-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ivg-tiny-task\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[ivg]\ntiny = ivg_tiny_task\n")
    models = {
        "base": str(gpt2_base),
        "tuned": str(gpt2_tuned),
        "untuned": str(gpt2_untuned),
    }
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(folder), environment.get("PYTHONPATH", "")]
    )
    environment["IVG_TINY_MODELS"] = json.dumps(models)
    environment["IVG_TINY_PAUSE"] = "0"
    environment["HF_HUB_OFFLINE"] = "1"
    return environment


def run_command(out: Path, *extra: str) -> list[str]:
    options = ["--out", str(out), "--batch-size", "2", *extra]
    return [sys.executable, "-m", "ivg", "run", "tiny", *options]


def run(environment: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        run_command(out, *extra),
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def generations(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for line in (out / "generations.jsonl").read_text().splitlines()
    ]


def part_lines(out: Path) -> int:
    return sum(
        len(path.read_text().splitlines())
        for path in (out / "parts").glob("rank-*.jsonl")
    )


@pytest.fixture(scope="module")
def uninterrupted(tiny_environment, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    completed = run(tiny_environment, out)
    assert completed.returncode == 0, completed.stderr
    return out


def test_run_writes_manifest_and_parts(uninterrupted):
    manifest = json.loads((uninterrupted / "manifest.json").read_text())

    assert len(manifest["setup_hash"]) == 64
    assert manifest["setup"]["batch_size"] == 2
    assert manifest["packages"]["torch"]
    assert part_lines(uninterrupted) == 2 * 8
    assert len(generations(uninterrupted)) == 2 * 16


def test_killed_run_resumes_to_same_outputs(tiny_environment, uninterrupted, tmp_path):
    out = tmp_path / "run"
    slow = {**tiny_environment, "IVG_TINY_PAUSE": "0.4"}
    process = subprocess.Popen(run_command(out), env=slow, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        (out / "parts").is_dir() and part_lines(out) >= 3
    ):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = part_lines(out)
    merged_before = (out / "generations.jsonl").exists()

    completed = run(tiny_environment, out)

    assert 3 <= finished_before < 16
    assert not merged_before
    assert completed.returncode == 0, completed.stderr
    assert "resuming the run" in completed.stderr
    assert generations(out) == generations(uninterrupted)
    assert part_lines(out) == 16


def test_finished_run_decodes_nothing_again(tiny_environment, uninterrupted, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_environment, out).returncode == 0
    parts_before = part_lines(out)

    completed = run(tiny_environment, out)

    assert completed.returncode == 0, completed.stderr
    assert part_lines(out) == parts_before
    assert generations(out) == generations(uninterrupted)


def test_different_spec_in_folder_rejected(tiny_environment, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_environment, out, "--method", "base").returncode == 0

    rejected = run(tiny_environment, out, "--method", "base", "--max-new-tokens", "3")
    overwritten = run(
        tiny_environment,
        out,
        "--method",
        "base",
        "--max-new-tokens",
        "3",
        "--overwrite",
    )

    assert rejected.returncode == 1
    assert "holds the outputs of a different run" in rejected.stderr
    assert "--overwrite" in rejected.stderr
    assert "Traceback" not in rejected.stderr
    assert overwritten.returncode == 0, overwritten.stderr
    assert all(row["new_tokens"] <= 3 for row in generations(out))


def test_torn_part_line_is_decoded_again(tiny_environment, uninterrupted, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_environment, out).returncode == 0
    part = out / "parts" / "rank-0.jsonl"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])

    completed = run(tiny_environment, out)

    assert completed.returncode == 0, completed.stderr
    assert "ignoring the unreadable line" in completed.stderr
    assert generations(out) == generations(uninterrupted)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(
    environment: dict, out: Path, processes: int, *extra: str
) -> subprocess.CompletedProcess:
    """Run the tiny task with ``processes`` processes, as torchrun launches them."""
    if processes == 1:
        return run(environment, out, *extra)
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_port",
        str(free_port()),
        "-m",
    ]
    command = launcher + run_command(out, *extra)[2:]
    return subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=600
    )


def test_two_processes_equal_one(tiny_environment, uninterrupted, tmp_path):
    out = tmp_path / "run"

    completed = torchrun(tiny_environment, out, 2)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert generations(out) == generations(uninterrupted)
    assert sorted(path.name for path in (out / "parts").iterdir()) == [
        "rank-0.jsonl",
        "rank-1.jsonl",
    ]


@pytest.mark.parametrize(
    ("first", "second"), [(1, 2), (2, 1)], ids=["one_then_two", "two_then_one"]
)
def test_resume_with_other_process_count(
    tiny_environment, uninterrupted, tmp_path, first, second
):
    out = tmp_path / "run"
    assert torchrun(tiny_environment, out, first, "--method", "base").returncode == 0
    # Keep half of every part file, as if the run had stopped there.
    for part in (out / "parts").iterdir():
        lines = part.read_text().splitlines()
        part.write_text("".join(line + "\n" for line in lines[: len(lines) // 2]))
    (out / "generations.jsonl").unlink()

    completed = torchrun(tiny_environment, out, second, "--method", "base")

    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = [row for row in generations(uninterrupted) if row["method"] == "base"]
    assert generations(out) == expected
