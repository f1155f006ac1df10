"""Training token reward models in the reference checkpoint layout.

The model is a transformer backbone with a trained head. The head maps the
hidden state ``h_s`` of a prefix into the space of the backbone's frozen input
embeddings and adds a term shared by every token, so that
``Q(s, a) = e_a · (W h_s) + u · h_s``: it scores every token ``a`` of the
vocabulary, including tokens never seen in training. It is saved as
``score_head.weight = E W + 1 uᵀ`` of shape (vocab, hidden), so ``token_rm``
loads it like any token reward model.

By default the backbone is frozen. ``train_layers`` also trains its top
layers and its final norm. The states that enter those layers are cached, so
an epoch runs only the trained layers.

Objectives:

- labelled sequences (FUDGE-style): the value of every prefix, read at the
  actual next token, is trained towards the sequence's label with a logistic
  loss; the reported metric is held-out accuracy at the last token;
- preference pairs (Bradley-Terry): the value of the chosen response at its
  last token should exceed the rejected one's; the metric is pairwise
  accuracy on held-out pairs.

The frozen part of the backbone runs once over the data; its hidden states
are cached in the work folder, so training epochs (and a resumed run) cost
only the trained part.
``layers`` keeps the first layers of the backbone, which is both cheaper and,
for sentiment, often more linearly separable than the last layer.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from contextlib import contextmanager
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
        train_layers: train this many top layers of the kept ones, and the
            final norm, with the head; 0 keeps the backbone frozen.
        backbone_learning_rate: AdamW learning rate of the trained layers.
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
    train_layers: int = 0
    backbone_learning_rate: float = 1e-4
    epochs: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    seed: int = 0


@dataclass
class Encoded:
    """Cached backbone states of sequences: what the trained part reads.

    Attributes:
        states: the state of every prefix that enters the trained part: the
            backbone's output when it is frozen, else the input of its first
            trained layer; shape (sequences, length, hidden).
        input_ids: the token at each prefix position, shape (sequences, length).
        next_tokens: the token that follows each prefix, shape (sequences, length).
        valid: whether a position has a real next token, shape (sequences, length).
        labels: 1 or 0 per sequence, or None for pairs.
    """

    states: torch.Tensor
    input_ids: torch.Tensor
    next_tokens: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor | None

    def input_mask(self, rows: torch.Tensor) -> torch.Tensor:
        """Return the attention mask of some sequences' prefix positions."""
        first = torch.ones(len(rows), 1, dtype=torch.long)
        return torch.cat([first, self.valid[rows, :-1].long()], dim=1)


class ValueHead(torch.nn.Module):
    """The trained part of a token reward model: top layers (if any) and head.

    Args:
        backbone: the backbone; only its top ``train_layers`` layers and its
            final norm are trained, and only when ``train_layers`` > 0.
        embeddings: the frozen input embeddings E, shape (vocab, embedding).
        train_layers: how many top layers of the backbone are trained.
    """

    def __init__(self, backbone, embeddings: torch.Tensor, train_layers: int):
        super().__init__()
        hidden = backbone.config.get_text_config().hidden_size
        self.project = torch.nn.Linear(hidden, embeddings.shape[1], bias=False)
        self.shared = torch.nn.Parameter(torch.zeros(hidden))
        torch.nn.init.zeros_(self.project.weight)
        self.embeddings = embeddings
        self.train_layers = train_layers
        # A list keeps the backbone out of this module's state_dict.
        self._backbone = [backbone]

    @property
    def backbone(self):
        """The backbone whose top layers this head trains."""
        return self._backbone[0]

    def backbone_parameters(self) -> list[torch.nn.Parameter]:
        """Return the trained parameters of the backbone."""
        if not self.train_layers:
            return []
        backbone = self.backbone
        layers = decoder_layers(backbone)
        frozen = {id(p) for p in backbone.get_input_embeddings().parameters()}
        for layer in layers[: len(layers) - self.train_layers]:
            frozen.update(id(p) for p in layer.parameters())
        return [p for p in backbone.parameters() if id(p) not in frozen]

    def hidden(self, data: Encoded, rows: torch.Tensor) -> torch.Tensor:
        """Return the backbone's output at the prefixes of some sequences."""
        if not self.train_layers:
            return data.states[rows]
        backbone = self.backbone
        with injected_states(backbone, self.train_layers, data.states[rows]):
            output = backbone(
                input_ids=data.input_ids[rows],
                attention_mask=data.input_mask(rows),
                use_cache=False,
            )
        return output.last_hidden_state

    def forward(self, data: Encoded, rows: torch.Tensor) -> torch.Tensor:
        """Return Q at every prefix of some sequences, shape (rows, length)."""
        hidden = self.hidden(data, rows)
        token_term = self.project(hidden) * self.embeddings[data.next_tokens[rows]]
        return token_term.sum(-1) + hidden @ self.shared

    def score_head(self) -> torch.Tensor:
        """Return the head as a (vocab, hidden) matrix: E W + 1 uᵀ."""
        return self.embeddings @ self.project.weight + self.shared[None, :]


def decoder_layers(backbone) -> torch.nn.ModuleList:
    """Return the list of transformer layers of a backbone.

    Raises:
        DataError: the backbone keeps its layers under another name.
    """
    for name in ("layers", "h", "blocks"):
        layers = getattr(backbone, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise DataError(
        f"{type(backbone).__name__} has no 'layers' or 'h' list of transformer "
        "layers, so train_layers is not supported for it; use train_layers=0"
    )


class _Replay(torch.nn.Module):
    """Stands in for the frozen layers: returns the cached states they produce."""

    def __init__(self, states: torch.Tensor) -> None:
        super().__init__()
        self.states = states

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.states


@contextmanager
def injected_states(backbone, train_layers: int, states: torch.Tensor):
    """Run only the top layers of a backbone, starting from cached states.

    The frozen layers are replaced by a module that returns ``states``, so the
    backbone's own forward builds the masks and position data of the trained
    layers.
    """
    # NOTE: the model loop must take each layer's return value as the next
    # hidden states, as Llama, Gemma 3 and GPT-2 do in transformers 5. A model
    # whose layers return tuples fails here.
    layers = decoder_layers(backbone)
    frozen = len(layers) - train_layers
    originals = [layers[i] for i in range(frozen)]
    replay = _Replay(states)
    try:
        for i in range(frozen):
            layers[i] = replay
        yield
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer


def train_token_rm(options: TokenRMOptions) -> dict[str, Any]:
    """Train a token reward model and write its checkpoint; return the metrics."""
    torch.manual_seed(options.seed)
    records = load_records(options.data)
    pairs = "chosen" in records[0] and "rejected" in records[0]
    train, held_out = _split(records, options)
    backbone, tokenizer = _load_backbone(options)
    embeddings = backbone.get_input_embeddings().weight.detach().float().clone()
    work = Path(options.out).with_name(f".{Path(options.out).name}.training")
    work.mkdir(parents=True, exist_ok=True)
    encode = _encode_pairs if pairs else _encode_labelled
    train_data = _cached(
        work / "train.pt", lambda: encode(backbone, tokenizer, train, options)
    )
    eval_data = _cached(
        work / "eval.pt", lambda: encode(backbone, tokenizer, held_out, options)
    )
    head = ValueHead(backbone, embeddings, options.train_layers)
    _train_head(head, train_data, eval_data, pairs, options, work)
    metrics = _evaluate(head, eval_data, pairs)
    metrics["train_" + next(iter(metrics))] = next(
        iter(_evaluate(head, train_data, pairs).values())
    )
    _save(backbone, tokenizer, head, options, metrics, work)
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
    if options.train_layers >= text_config.num_hidden_layers:
        raise DataError(
            f"train_layers={options.train_layers} leaves no frozen layer of the "
            f"{text_config.num_hidden_layers} kept; use at most "
            f"{text_config.num_hidden_layers - 1}"
        )
    backbone = AutoModel.from_pretrained(path, config=config, dtype=torch.float32)
    backbone.eval().requires_grad_(False)
    if options.train_layers:
        decoder_layers(backbone)
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
    return Encoded(*_run_backbone(backbone, sequences, options), labels)


def _encode_pairs(backbone, tokenizer, records, options) -> Encoded:
    """Encode each pair as two sequences, chosen first, rejected second."""
    pairs = pair_records(records, options.data)
    sequences = []
    for pair in pairs:
        for response in (pair["chosen"], pair["rejected"]):
            sequences.append(_token_ids(tokenizer, pair["prompt"] + response, options))
    return Encoded(*_run_backbone(backbone, sequences, options), None)


def _token_ids(tokenizer, text: str, options: TokenRMOptions) -> list[int]:
    ids = tokenizer(text)["input_ids"][: options.max_tokens]
    if len(ids) < 2:
        raise DataError(f"{options.data}: a sequence has fewer than 2 tokens: {text!r}")
    return ids


@torch.no_grad()
def _run_backbone(backbone, sequences: list[list[int]], options: TokenRMOptions):
    """Return the cached states, input ids, next tokens and valid mask.

    Sequences are right padded. The states are the backbone's output, or the
    input of its first trained layer when ``train_layers`` > 0.
    """
    width = max(len(ids) for ids in sequences)
    hidden = backbone.config.get_text_config().hidden_size
    frozen = len(decoder_layers(backbone)) - options.train_layers
    states = torch.zeros(len(sequences), width - 1, hidden)
    input_ids = torch.zeros(len(sequences), width - 1, dtype=torch.long)
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
        output = backbone(
            input_ids=ids,
            attention_mask=mask,
            output_hidden_states=bool(options.train_layers),
            use_cache=False,
        )
        if options.train_layers:
            output_states = output.hidden_states[frozen]
        else:
            output_states = output.last_hidden_state
        rows = slice(start, start + len(batch))
        states[rows] = output_states[:, :-1].float()
        input_ids[rows] = ids[:, :-1]
        next_tokens[rows] = ids[:, 1:]
        valid[rows] = mask[:, 1:].bool()
    return states, input_ids, next_tokens, valid


def _last_values(head: ValueHead, data: Encoded, rows) -> torch.Tensor:
    values = head(data, rows)
    last = data.valid[rows].long().sum(-1) - 1
    return values.gather(1, last[:, None]).squeeze(1)


def _train_head(head: ValueHead, train, held_out, pairs, options, work) -> None:
    groups = [{"params": list(head.parameters()), "lr": options.learning_rate}]
    trained = head.backbone_parameters()
    if trained:
        groups.append({"params": trained, "lr": options.backbone_learning_rate})
    for parameter in trained:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay)
    start = _restore(work / "state.pt", head, optimizer)
    count = train.states.shape[0] // (2 if pairs else 1)
    for epoch in tqdm(range(start, options.epochs), desc="epochs", unit="epoch"):
        order = torch.randperm(count, generator=torch.Generator().manual_seed(epoch))
        for begin in range(0, count, options.batch_size):
            batch = order[begin : begin + options.batch_size]
            loss = _loss(head, train, batch, pairs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        logger.info("epoch %d: %s", epoch + 1, _evaluate(head, held_out, pairs))
        _checkpoint(work / "state.pt", head, optimizer, epoch + 1)
    for parameter in trained:
        parameter.requires_grad_(False)


def _loss(head: ValueHead, data: Encoded, batch: torch.Tensor, pairs: bool):
    if pairs:
        chosen = _last_values(head, data, 2 * batch)
        rejected = _last_values(head, data, 2 * batch + 1)
        return -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    values = head(data, batch)
    valid = data.valid[batch]
    targets = data.labels[batch][:, None].expand_as(values)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        values, targets, reduction="none"
    )
    return (losses * valid).sum() / valid.sum()


@torch.no_grad()
def _evaluate(head: ValueHead, data: Encoded, pairs: bool) -> dict[str, float]:
    if pairs:
        rows = torch.arange(data.states.shape[0] // 2)
        chosen = _batched_last_values(head, data, 2 * rows)
        rejected = _batched_last_values(head, data, 2 * rows + 1)
        return {"pairwise_accuracy": float((chosen > rejected).float().mean())}
    rows = torch.arange(data.states.shape[0])
    predicted = _batched_last_values(head, data, rows) > 0
    return {"accuracy": float((predicted == data.labels.bool()).float().mean())}


def _batched_last_values(head: ValueHead, data: Encoded, rows: torch.Tensor):
    size = 64
    parts = [
        _last_values(head, data, rows[i : i + size]) for i in range(0, len(rows), size)
    ]
    return torch.cat(parts)


def _trained_state(head: ValueHead) -> dict[str, torch.Tensor]:
    state = {f"head.{k}": v for k, v in head.state_dict().items()}
    backbone = head.backbone
    trained = {id(p) for p in head.backbone_parameters()}
    for name, parameter in backbone.named_parameters():
        if id(parameter) in trained:
            state[f"backbone.{name}"] = parameter.detach().clone()
    return state


def _restore(path: Path, head: ValueHead, optimizer) -> int:
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=True)
    trained = state["trained"]
    head.load_state_dict(
        {
            k.removeprefix("head."): v
            for k, v in trained.items()
            if k.startswith("head.")
        }
    )
    parameters = dict(head.backbone.named_parameters())
    with torch.no_grad():
        for key, value in trained.items():
            if key.startswith("backbone."):
                parameters[key.removeprefix("backbone.")].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming token RM training after epoch %d", state["epoch"])
    return state["epoch"]


def _checkpoint(path: Path, head: ValueHead, optimizer, epoch: int) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(
        {
            "trained": _trained_state(head),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
        },
        temporary,
    )
    temporary.replace(path)


def _save(backbone, tokenizer, head: ValueHead, options, metrics, work) -> None:
    staging = work / "final"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    prefix = backbone.base_model_prefix
    state = {f"{prefix}.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    with torch.no_grad():
        state[SCORE_HEAD_KEY] = head.score_head().contiguous()
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
