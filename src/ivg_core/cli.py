"""The ``ivg`` command line: each command parses arguments and calls the library."""

from __future__ import annotations

import json
import logging
import platform
import sys
from importlib import metadata
from pathlib import Path

import click

from .errors import IvgError
from .registry import GROUPS, default_registry

__all__ = ["main"]


LOGGERS = ("ivg", "ivg_core", "ivg_plugins", "ivg_tasks")


@click.group()
@click.version_option(package_name="ivg")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
def cli(verbose: bool, quiet: bool) -> None:
    """Align a frozen language model at inference time with small value functions."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # ivg's loggers only: transformers keeps its own handler and verbosity.
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins(as_json: bool) -> None:
    """List the loaded plugins with their hooks and registered kinds."""
    registry = default_registry()
    listing = [
        {
            "name": info.name,
            "distribution": info.distribution,
            "builtin": info.builtin,
            "hooks": info.hooks,
            "kinds": info.kinds,
        }
        for info in registry.plugins
    ]
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for entry in listing:
        origin = "built-in" if entry["builtin"] else entry["distribution"] or "local"
        click.echo(f"{entry['name']} ({origin})")
        click.echo(f"  hooks: {', '.join(entry['hooks'])}")
        for group in GROUPS:
            if group in entry["kinds"]:
                click.echo(f"  {group}: {', '.join(entry['kinds'][group])}")


@cli.command()
@click.option(
    "--spec",
    "spec_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Guidance spec as a TOML, YAML, JSON or Python file.",
)
@click.option("--prompt", "prompts", multiple=True, help="A prompt; repeat for more.")
@click.option(
    "--prompts-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A text file with one prompt per line.",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Prompts per batch.")
def generate(
    spec_path: Path,
    prompts: tuple[str, ...],
    prompts_file: Path | None,
    batch_size: int | None,
) -> None:
    """Decode prompts with a spec and print one JSON result per line."""
    from .generator import GuidedGenerator

    texts = list(prompts)
    if prompts_file is not None:
        lines = prompts_file.read_text(encoding="utf-8").splitlines()
        texts.extend(line for line in lines if line.strip())
    if not texts:
        raise click.UsageError("no prompts; pass --prompt TEXT or --prompts-file FILE")
    generator = GuidedGenerator(spec_path)
    click.echo(f"decoding {len(texts)} prompt(s)", err=True)
    for result in generator.generate(texts, batch_size=batch_size):
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))


@cli.command()
@click.argument("task")
@click.option("--preset", help="Preset of the task; default: the task's default.")
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="Method to run (repeat for several); 'all' or none runs every method.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Use only the first N prompts."
)
@click.option(
    "--prompts",
    help="Prompt source: a CSV, JSONL, JSON or text file, 'builtin', or "
    "'hf:DATASET[:SPLIT]' for a Hugging Face Hub dataset.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/latest"),
    show_default=True,
    help="Folder for generations.jsonl, report.json and report.md.",
)
@click.option("--seed", type=click.IntRange(min=0), help="Run seed of every method.")
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also run this TOML, YAML, JSON or Python spec file as the method "
    "'custom', next to 'base' unless --method names others.",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    help="Override the preset's maximum number of response tokens.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Prompts decoded together; default: the preset's batch size (16 for "
    "short prompts, fewer for long ones).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Delete the outputs of a different run in --out instead of stopping.",
)
def run(
    task: str,
    preset: str | None,
    methods: tuple[str, ...],
    limit: int | None,
    prompts: str | None,
    out_dir: Path,
    seed: int | None,
    spec_path: Path | None,
    max_new_tokens: int | None,
    batch_size: int | None,
    overwrite: bool,
) -> None:
    """Run the methods of a task preset on the same prompts and report them.

    Each finished batch is saved at once; running the same command again
    resumes an interrupted run. Under accelerate launch or torchrun, the
    processes share the batches and the main process writes the outputs.
    """
    from .runner import RunOptions, run_task

    options = RunOptions(
        task=task,
        preset=preset,
        methods=list(methods) or None,
        spec=spec_path,
        limit=limit,
        prompts=prompts,
        out_dir=out_dir,
        seed=seed,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        overwrite=overwrite,
    )
    report = run_task(options)
    if report is not None:
        click.echo(report.markdown())
        click.echo(f"outputs written to {out_dir}", err=True)


@cli.group()
def spec() -> None:
    """Validate, describe and show guidance specs."""


@spec.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def spec_validate(path: Path) -> None:
    """Check a TOML, YAML, JSON or Python spec file; list every error."""
    from .specs import load_spec

    load_spec(path)
    click.echo(f"{path}: valid")


@spec.command("schema")
def spec_schema() -> None:
    """Print the JSON Schema of specs, with the kinds of the loaded plugins."""
    from .schema import spec_json_schema

    click.echo(json.dumps(spec_json_schema(default_registry()), indent=2))


@spec.command("show")
@click.argument("task")
@click.option("--preset", help="Preset of the task; default: the task's default.")
@click.option("--method", required=True, help="Method whose spec to print.")
def spec_show(task: str, preset: str | None, method: str) -> None:
    """Print the spec of a task's method as JSON, to copy and edit."""
    from .runner import resolved_spec

    click.echo(json.dumps(resolved_spec(task, preset, method), indent=2))


@cli.command()
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    type=click.Choice(["a", "b", "c", "base", "pair"]),
    help="Workload to run (repeat for several); default: all of them.",
)
@click.option(
    "--prompts",
    "prompt_count",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Prompts per workload.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed runs per measurement, after one warm-up; the median is reported.",
)
@click.option(
    "--reference-prompts",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Prompts decoded on the reference path, whose time per prompt is "
    "compared with the fast path's; 0 skips it.",
)
@click.option(
    "--model",
    help="Model to benchmark: an embedded model name or a local checkpoint "
    "folder; default: the embedded smollm2-135m-instruct.",
)
def bench(
    workloads: tuple[str, ...],
    prompt_count: int,
    repeats: int,
    reference_prompts: int,
    model: str | None,
) -> None:
    """Time guided decoding against its cost floor and the reference path."""
    from .bench import format_table, machine_description, model_reference, run_benchmark

    names = list(workloads) or ["a", "b", "c", "base", "pair"]
    click.echo(f"running workloads {', '.join(names)}", err=True)
    reference = model_reference(model) if model else None
    results = run_benchmark(names, prompt_count, repeats, reference_prompts, reference)
    click.echo(f"machine: {machine_description()}\n")
    click.echo(format_table(results))


@cli.group()
def train() -> None:
    """Train value functions: DPO-tuned guides and token reward models."""


@train.command("dpo")
@click.option(
    "--model",
    required=True,
    help="Model to start from: Hub id, folder or embedded name.",
)
@click.option(
    "--data",
    required=True,
    help="Preference pairs (prompt, chosen, rejected): a JSON Lines, JSON or "
    "CSV file, or 'hf:DATASET[:SPLIT]'.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of the tuned model.",
)
@click.option("--beta", type=float, default=0.1, show_default=True, help="DPO's beta.")
@click.option(
    "--learning-rate",
    type=float,
    default=5e-6,
    show_default=True,
    help="Optimizer learning rate.",
)
@click.option(
    "--epochs", type=float, default=1.0, show_default=True, help="Passes over the data."
)
@click.option(
    "--max-steps",
    type=int,
    default=-1,
    show_default=True,
    help="Stop after this many steps; -1 runs every epoch.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Pairs per step.",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=8),
    default=256,
    show_default=True,
    help="Tokens kept per example.",
)
@click.option(
    "--lora", is_flag=True, help="Train LoRA adapters with peft and merge them."
)
@click.option(
    "--lora-rank",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Rank of the LoRA adapters.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N pairs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def train_dpo_command(**arguments) -> None:
    """Fine-tune the tuned model of an implicit pair with DPO (TRL).

    The starting model is the untuned half of the pair; the output folder
    holds a checkpoint that eft and implicit_value load as the tuned model.
    Running the same command again resumes a stopped run.
    """
    from .training.dpo import DPOOptions, train_dpo

    result = train_dpo(DPOOptions(**arguments))
    losses = [entry["loss"] for entry in result["log"] if "loss" in entry]
    if losses:
        click.echo(f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f}")
    click.echo(f"tuned model written to {arguments['out']}", err=True)


@train.command("token-rm")
@click.option(
    "--model", required=True, help="Backbone: Hub id, folder or embedded name."
)
@click.option(
    "--data",
    required=True,
    help="Labelled sequences (text, label) or preference pairs (prompt, chosen, "
    "rejected): a JSON Lines, JSON or CSV file, or 'hf:DATASET[:SPLIT]'.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder of the token reward model.",
)
@click.option(
    "--name",
    help="Write the model to the ivg cache folder under this name instead of "
    "--out; the offline sentiment preset looks for 'token-rm-imdb' there.",
)
@click.option(
    "--train-rows",
    type=click.IntRange(min=1),
    help="Records used for training, from the start; default: three quarters.",
)
@click.option(
    "--eval-rows",
    type=click.IntRange(min=1),
    help="Held-out records after the training ones; default: all of them.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=2),
    default=128,
    show_default=True,
    help="Tokens kept per sequence.",
)
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    help="Keep only the first N transformer layers of the backbone.",
)
@click.option(
    "--train-layers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also train the top N transformer layers and the final norm; 0 keeps "
    "the backbone frozen.",
)
@click.option(
    "--backbone-learning-rate",
    type=float,
    default=1e-4,
    show_default=True,
    help="Learning rate of the layers that --train-layers trains.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Passes over the training data.",
)
@click.option(
    "--learning-rate",
    type=float,
    default=1e-3,
    show_default=True,
    help="Learning rate of the head.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Sequences per step.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def train_token_rm_command(**arguments) -> None:
    """Train a token reward model on a frozen or partly trained backbone.

    The checkpoint has the reference layout (backbone and score_head of shape
    (vocab, hidden)), so token_rm loads it as a guide or a chunk scorer. The
    frozen layers run once and their states are cached, so training takes
    minutes on a CPU; running the same command again resumes a stopped run.
    """
    from .training.token_rm import TokenRMOptions, train_token_rm

    name = arguments.pop("name")
    if (name is None) == (arguments["out"] is None):
        raise click.UsageError("pass either --out FOLDER or --name NAME")
    if name is not None:
        from ivg_plugins.embedded import cache_dir

        arguments["out"] = cache_dir() / name
    metrics = train_token_rm(TokenRMOptions(**arguments))
    for name, value in metrics.items():
        click.echo(f"{name}: {value:.4f}")
    click.echo(f"token reward model written to {arguments['out']}", err=True)


@cli.command()
def env() -> None:
    """Print versions of Python, ivg and its main dependencies, for bug reports."""
    click.echo(f"python: {platform.python_version()} ({platform.platform()})")
    for name in ("ivg", "torch", "transformers", "pluggy", "pydantic", "accelerate"):
        try:
            click.echo(f"{name}: {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            click.echo(f"{name}: not installed")
    import torch

    click.echo(f"cuda available: {torch.cuda.is_available()}")


def main() -> None:
    """Run the CLI; ivg errors become one-line messages and exit status 1."""
    try:
        cli(standalone_mode=True)
    except IvgError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
