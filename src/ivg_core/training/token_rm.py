"""Training token reward models in the reference checkpoint layout.

The model is a frozen transformer backbone with a trained head. The head maps
the hidden state ``h_s`` of a prefix into the space of the backbone's frozen
input embeddings, so that ``Q(s, a) = e_a · (W h_s)``: it scores every token
``a`` of the vocabulary, including tokens never seen in training. It is saved
as ``score_head.weight = E W`` of shape (vocab, hidden), so ``token_rm`` loads
it like any token reward model.

Objectives:

- labelled sequences (FUDGE-style): the value of every prefix, read at the
  actual next token, is trained towards the sequence's label with a logistic
  loss; the reported metric is held-out accuracy at the last token;
- preference pairs (Bradley-Terry): the value of the chosen response at its
  last token should exceed the rejected one's; the metric is pairwise
  accuracy on held-out pairs.

The backbone runs once over the data; its hidden states are cached in the
work folder, so training epochs (and a resumed run) cost only the head.
``layers`` keeps the first layers of the backbone, which is both cheaper and,
for sentiment, often more linearly separable than the last layer.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..errors import DataError
from ..heads import SCORE_HEAD_KEY
from .common import (
    binary_label,
    load_records,
    pair_records,
    replace_folder,
    resolve_model_path,
    write_config,
)

__all__ = ["TokenRMOptions", "train_token_rm"]

logger = logging.getLogger(__name__)


@dataclass
class TokenRMOptions:
    """Settings of a token reward model run.

    Attributes:
        model: backbone: Hub id, local folder or embedded model name.
        data: labelled sequences (``text`` and ``label`` columns) or preference
            pairs (``prompt``, ``chosen``, ``rejected``), as a local file or
            ``hf:DATASET[:SPLIT]``.
        out: folder of the token reward model checkpoint.
        train_rows: records used for training, from the start; the rest, up to
            ``eval_rows``, are held out.
        eval_rows: held-out records; None uses every record after training.
        max_tokens: tokens kept per sequence (prompt and response together).
        layers: keep only the first this many transformer layers; None keeps
            every layer.
        epochs: passes over the training data.
        learning_rate: AdamW learning rate of the head.
        weight_decay: AdamW weight decay of the head.
        batch_size: sequences per optimizer step.
        seed: random seed of initialization and shuffling.
    """

    model: str
    data: str
    out: Path
    train_rows: int | None = None
    eval_rows: int | None = None
    max_tokens: int = 128
    layers: int | None = None
    epochs: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    seed: int = 0


@dataclass
class Encoded:
    """Cached backbone states of sequences: what the head trains on.

    Attributes:
        states: hidden state of every prefix, shape (sequences, length, hidden).
        next_tokens: the token that follows each prefix, shape (sequences, length).
        valid: whether a position has a real next token, shape (sequences, length).
        labels: 1 or 0 per sequence, or None for pairs.
    """

    states: torch.Tensor
    next_tokens: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor | None


def train_token_rm(options: TokenRMOptions) -> dict[str, Any]:
    """Train a token reward model and write its checkpoint; return the metrics."""
    torch.manual_seed(options.seed)
    records = load_records(options.data)
    pairs = "chosen" in records[0] and "rejected" in records[0]
    train, held_out = _split(records, options)
    backbone, tokenizer = _load_backbone(options)
    embeddings = backbone.get_input_embeddings().weight.detach().float()
    work = Path(options.out).with_name(f".{Path(options.out).name}.training")
    work.mkdir(parents=True, exist_ok=True)
    encode = _encode_pairs if pairs else _encode_labelled
    train_data = _cached(
        work / "train.pt", lambda: encode(backbone, tokenizer, train, options)
    )
    eval_data = _cached(
        work / "eval.pt", lambda: encode(backbone, tokenizer, held_out, options)
    )
    head = _train_head(train_data, eval_data, embeddings, pairs, options, work)
    metrics = _evaluate(head, eval_data, embeddings, pairs)
    metrics["train_" + next(iter(metrics))] = next(
        iter(_evaluate(head, train_data, embeddings, pairs).values())
    )
    _save(backbone, tokenizer, head, embeddings, options, metrics, work)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def _split(records: list[dict], options: TokenRMOptions) -> tuple[list, list]:
    count = options.train_rows or math.ceil(0.75 * len(records))
    held_out = records[count:]
    if options.eval_rows is not None:
        held_out = held_out[: options.eval_rows]
    if not records[:count] or not held_out:
        raise DataError(
            f"{options.data} has {len(records)} records; train_rows={count} leaves "
            "no records for training or for evaluation"
        )
    return records[:count], held_out


def _load_backbone(options: TokenRMOptions) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_model_path(options.model)
    config = AutoConfig.from_pretrained(path)
    text_config = config.get_text_config()
    if options.layers is not None:
        if not 1 <= options.layers <= text_config.num_hidden_layers:
            raise DataError(
                f"layers={options.layers} is outside 1 to "
                f"{text_config.num_hidden_layers}, the layers of {options.model!r}"
            )
        text_config.num_hidden_layers = options.layers
    backbone = AutoModel.from_pretrained(path, config=config, dtype=torch.float32)
    backbone.eval().requires_grad_(False)
    return backbone, AutoTokenizer.from_pretrained(path)


def _cached(path: Path, compute) -> Encoded:
    if path.is_file():
        logger.info("reading cached backbone states from %s", path)
        return Encoded(**torch.load(path, weights_only=True))
    encoded = compute()
    temporary = path.with_suffix(".tmp")
    torch.save(asdict(encoded), temporary)
    temporary.replace(path)
    return encoded


def _encode_labelled(backbone, tokenizer, records, options) -> Encoded:
    from ..data import require_column

    text_column = require_column(records, ["text", "review", "response"], options.data)
    label_column = require_column(
        records, ["label", "labels", "sentiment"], options.data
    )
    sequences = [_token_ids(tokenizer, str(r[text_column]), options) for r in records]
    labels = torch.tensor(
        [binary_label(r[label_column], options.data, i) for i, r in enumerate(records)],
        dtype=torch.float32,
    )
    states, next_tokens, valid = _run_backbone(backbone, sequences, options)
    return Encoded(states, next_tokens, valid, labels)


def _encode_pairs(backbone, tokenizer, records, options) -> Encoded:
    """Encode each pair as two sequences, chosen first, rejected second."""
    pairs = pair_records(records, options.data)
    sequences = []
    for pair in pairs:
        for response in (pair["chosen"], pair["rejected"]):
            sequences.append(_token_ids(tokenizer, pair["prompt"] + response, options))
    states, next_tokens, valid = _run_backbone(backbone, sequences, options)
    return Encoded(states, next_tokens, valid, None)


def _token_ids(tokenizer, text: str, options: TokenRMOptions) -> list[int]:
    ids = tokenizer(text)["input_ids"][: options.max_tokens]
    if len(ids) < 2:
        raise DataError(f"{options.data}: a sequence has fewer than 2 tokens: {text!r}")
    return ids


@torch.no_grad()
def _run_backbone(backbone, sequences: list[list[int]], options: TokenRMOptions):
    """Return the states of each prefix and the token after it, right padded."""
    width = max(len(ids) for ids in sequences)
    hidden = backbone.config.get_text_config().hidden_size
    states = torch.zeros(len(sequences), width - 1, hidden)
    next_tokens = torch.zeros(len(sequences), width - 1, dtype=torch.long)
    valid = torch.zeros(len(sequences), width - 1, dtype=torch.bool)
    size = 16
    for start in tqdm(
        range(0, len(sequences), size), desc="backbone states", unit="batch"
    ):
        batch = sequences[start : start + size]
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, sequence in enumerate(batch):
            ids[i, : len(sequence)] = torch.tensor(sequence)
            mask[i, : len(sequence)] = 1
        output = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = slice(start, start + len(batch))
        states[rows] = output[:, :-1].float()
        next_tokens[rows] = ids[:, 1:]
        valid[rows] = mask[:, 1:].bool()
    return states, next_tokens, valid


def _values(head: torch.nn.Linear, data: Encoded, embeddings, rows) -> torch.Tensor:
    """Return Q at every prefix of some sequences, shape (rows, length)."""
    projected = head(data.states[rows])
    return (projected * embeddings[data.next_tokens[rows]]).sum(-1)


def _last_values(head, data: Encoded, embeddings, rows) -> torch.Tensor:
    values = _values(head, data, embeddings, rows)
    last = data.valid[rows].long().sum(-1) - 1
    return values.gather(1, last[:, None]).squeeze(1)


def _train_head(train, held_out, embeddings, pairs, options, work) -> torch.nn.Linear:
    hidden = train.states.shape[-1]
    head = torch.nn.Linear(hidden, embeddings.shape[1], bias=False)
    torch.nn.init.zeros_(head.weight)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    start = _restore(work / "state.pt", head, optimizer)
    count = train.states.shape[0] // (2 if pairs else 1)
    for epoch in tqdm(range(start, options.epochs), desc="epochs", unit="epoch"):
        order = torch.randperm(count, generator=torch.Generator().manual_seed(epoch))
        for begin in range(0, count, options.batch_size):
            batch = order[begin : begin + options.batch_size]
            loss = _loss(head, train, embeddings, batch, pairs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        logger.info(
            "epoch %d: %s", epoch + 1, _evaluate(head, held_out, embeddings, pairs)
        )
        _checkpoint(work / "state.pt", head, optimizer, epoch + 1)
    return head


def _loss(head, data: Encoded, embeddings, batch: torch.Tensor, pairs: bool):
    if pairs:
        chosen = _last_values(head, data, embeddings, 2 * batch)
        rejected = _last_values(head, data, embeddings, 2 * batch + 1)
        return -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    values = _values(head, data, embeddings, batch)
    valid = data.valid[batch]
    targets = data.labels[batch][:, None].expand_as(values)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        values, targets, reduction="none"
    )
    return (losses * valid).sum() / valid.sum()


@torch.no_grad()
def _evaluate(head, data: Encoded, embeddings, pairs: bool) -> dict[str, float]:
    if pairs:
        rows = torch.arange(data.states.shape[0] // 2)
        chosen = _last_values(head, data, embeddings, 2 * rows)
        rejected = _last_values(head, data, embeddings, 2 * rows + 1)
        return {"pairwise_accuracy": float((chosen > rejected).float().mean())}
    rows = torch.arange(data.states.shape[0])
    predicted = _last_values(head, data, embeddings, rows) > 0
    return {"accuracy": float((predicted == data.labels.bool()).float().mean())}


def _restore(path: Path, head, optimizer) -> int:
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=True)
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming token RM training after epoch %d", state["epoch"])
    return state["epoch"]


def _checkpoint(path: Path, head, optimizer, epoch: int) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(
        {
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
        },
        temporary,
    )
    temporary.replace(path)


def _save(backbone, tokenizer, head, embeddings, options, metrics, work) -> None:
    staging = work / "final"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    prefix = backbone.base_model_prefix
    state = {f"{prefix}.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    with torch.no_grad():
        state[SCORE_HEAD_KEY] = (embeddings @ head.weight).contiguous()
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    config = backbone.config
    config.architectures = [type(backbone).__name__ + "ForTokenScore"]
    config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_config(
        staging, {"command": "token-rm", **asdict(options), "metrics": metrics}
    )
    replace_folder(staging, Path(options.out))
    logger.info(
        "wrote the token reward model to %s: %s", options.out, json.dumps(metrics)
    )
