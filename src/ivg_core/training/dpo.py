"""DPO fine-tuning of the tuned model of an implicit pair, with TRL.

The untuned model of the pair is the starting checkpoint; the result is a
checkpoint that ``eft`` and ``implicit_value`` load as the tuned model. TRL's
``DPOTrainer`` does the training (and LoRA through peft, when asked); this
module prepares the data, the configuration and the output folder.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .common import (
    load_records,
    pair_records,
    replace_folder,
    resolve_model_path,
    write_config,
)

__all__ = ["DPOOptions", "train_dpo"]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


@dataclass
class DPOOptions:
    """Settings of a DPO run.

    Attributes:
        model: Hub id, local folder or embedded model name to start from.
        data: preference pairs (prompt, chosen, rejected): a local JSON Lines,
            JSON or CSV file, or ``hf:DATASET[:SPLIT]``.
        out: folder of the tuned checkpoint.
        beta: DPO's β, the strength of the pull towards the reference model.
        learning_rate: optimizer learning rate.
        epochs: passes over the data.
        max_steps: stop after this many optimizer steps; -1 runs every epoch.
        batch_size: pairs per step.
        max_length: tokens of prompt + response kept per example.
        lora: train LoRA adapters (peft) and merge them into the checkpoint.
        lora_rank: rank of the LoRA adapters.
        limit: use only the first ``limit`` pairs.
        seed: random seed of the trainer.
        save_steps: keep a resumable checkpoint every this many steps.
    """

    model: str
    data: str
    out: Path
    beta: float = 0.1
    learning_rate: float = 5e-6
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    max_length: int = 256
    lora: bool = False
    lora_rank: int = 16
    limit: int | None = None
    seed: int = 0
    save_steps: int = 50


def train_dpo(options: DPOOptions) -> dict[str, Any]:
    """Fine-tune with DPO and write the checkpoint; return the training log.

    A run stopped part-way resumes from its last saved step when started
    again with the same output folder.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    pairs = pair_records(load_records(options.data), options.data)[: options.limit]
    if not pairs:
        raise DataError(f"{options.data} has no preference pairs")
    path = resolve_model_path(options.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    work = Path(options.out).with_name(f".{Path(options.out).name}.training")
    trainer = DPOTrainer(
        model=model,
        args=_config(options, work / CHECKPOINTS, DPOConfig),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=_lora(options) if options.lora else None,
    )
    resume = _has_checkpoint(work / CHECKPOINTS)
    if resume:
        logger.info("resuming DPO from the last checkpoint in %s", work)
    trainer.train(resume_from_checkpoint=resume or None)
    _save(trainer, tokenizer, options, work)
    return {"log": trainer.state.log_history}


def _config(options: DPOOptions, folder: Path, config_class: type) -> Any:
    return config_class(
        output_dir=str(folder),
        beta=options.beta,
        learning_rate=options.learning_rate,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        per_device_train_batch_size=options.batch_size,
        max_length=options.max_length,
        logging_steps=1,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=1,
        report_to=[],
        seed=options.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )


def _lora(options: DPOOptions) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=options.lora_rank,
        lora_alpha=2 * options.lora_rank,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def _has_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("checkpoint-*"))


def _save(trainer: Any, tokenizer: Any, options: DPOOptions, work: Path) -> None:
    model = trainer.model
    if options.lora:
        model = model.merge_and_unload()
    staging = work / "final"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_config(staging, {"command": "dpo", **asdict(options)})
    replace_folder(staging, Path(options.out))
    shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote the DPO-tuned model to %s", options.out)
