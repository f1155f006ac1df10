"""Model heads: causal LMs, token and sequence reward models, sequence classifiers."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from .errors import ModelLoadError
from .extension import ResolvedModel

__all__ = [
    "SCORE_HEAD_KEY",
    "SequenceScoreModel",
    "TokenRewardModel",
    "load_head_model",
    "read_checkpoint_tensor",
]

logger = logging.getLogger(__name__)

SCORE_HEAD_KEY = "score_head.weight"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class TokenRewardModel(nn.Module):
    """A token reward model: a transformer backbone and a linear ``score_head``.

    The head maps each hidden state to Q(s, a) for every token ``a`` of the
    vocabulary, so ``forward`` returns Q values where a causal LM returns logits.
    """

    def __init__(self, backbone: nn.Module, score_head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.score_head = score_head
        self.config = backbone.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
    ) -> CausalLMOutputWithPast:
        """Return Q values of shape (batch, kept positions, vocab) in ``logits``."""
        output = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        hidden = output.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(
            logits=self.score_head(hidden), cache=output.cache
        )


class SequenceScoreModel(nn.Module):
    """A sequence score model: a transformer backbone and a linear ``score_head``.

    The head maps the hidden state of a text's last token to ``score_dim``
    scores, as in golden reward models such as ``chadlzx/golden_rm_summarize``.
    """

    def __init__(self, backbone: nn.Module, score_head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.score_head = score_head
        self.config = backbone.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the scores at each text's last non-padding token.

        Position ids count from each text's first non-padding token, so right
        and left padding give the same scores.

        Args:
            input_ids: token ids, shape (batch, length).
            attention_mask: 1 for text tokens and 0 for padding, same shape;
                None means no padding.

        Returns:
            scores of shape (batch, score_dim).

        Raises:
            ValueError: a row of ``attention_mask`` has no text token.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        token_counts = attention_mask.long().cumsum(-1)
        if (token_counts[:, -1] == 0).any():
            raise ValueError(
                "attention_mask has a row without text tokens; every text needs "
                "at least one token to be scored"
            )
        output = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=(token_counts - 1).clamp(min=0),
            use_cache=False,
        )
        # The cumulative count reaches its maximum first at the last text token.
        last = token_counts.argmax(-1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return self.score_head(output.last_hidden_state[rows, last])


def load_head_model(
    resolved: ResolvedModel,
    head: str,
    dtype: torch.dtype,
    device: torch.device,
    device_map: str | None = None,
) -> nn.Module:
    """Load the model of one head kind from resolved files, in eval mode.

    With ``device_map``, accelerate spreads the layers over the devices and
    ``device`` is not used; a score head goes to the device of the last layer.
    """
    kwargs = dict(resolved.extra)
    if device_map is not None:
        kwargs["device_map"] = device_map
    if resolved.revision is not None:
        kwargs["revision"] = resolved.revision
    if resolved.gguf_file is not None:
        kwargs["gguf_file"] = resolved.gguf_file
    if head == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=dtype, **kwargs
        )
    elif head == "token_rm":
        model = _load_token_reward_model(resolved, dtype, kwargs)
    elif head == "sequence_classifier":
        model = AutoModelForSequenceClassification.from_pretrained(
            resolved.path, dtype=dtype, **kwargs
        )
    elif head == "sequence_score":
        model = _load_sequence_score_model(resolved, dtype, kwargs)
    else:
        raise ValueError(
            f"unknown head {head!r}; use 'causal_lm', 'token_rm', "
            "'sequence_classifier' or 'sequence_score'"
        )
    if device_map is None:
        model = model.to(device)
    elif isinstance(getattr(model, "score_head", None), nn.Module):
        last = list(model.backbone.parameters())[-1].device
        model.score_head.to(last)
    return model.eval()


class _HideScoreHeadReport(logging.Filter):
    """Drops transformers' load report when its only finding is the score head.

    The backbone loads without the head, so the head's weight is always an
    unexpected key there; ivg reads it separately.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        findings = [line for line in message.splitlines() if "|" in line]
        findings = [line for line in findings[1:] if line.strip("-+| ")]
        return not findings or any(SCORE_HEAD_KEY not in line for line in findings)


def _load_token_reward_model(
    resolved: ResolvedModel, dtype: torch.dtype, kwargs: dict
) -> TokenRewardModel:
    backbone = _load_backbone(resolved, dtype, kwargs)
    head = _load_score_head(resolved, backbone, dtype, "token reward model", "vocab")
    return TokenRewardModel(backbone, head)


def _load_sequence_score_model(
    resolved: ResolvedModel, dtype: torch.dtype, kwargs: dict
) -> SequenceScoreModel:
    backbone = _load_backbone(resolved, dtype, kwargs)
    head = _load_score_head(
        resolved, backbone, dtype, "sequence score model", "score_dim"
    )
    return SequenceScoreModel(backbone, head)


def _load_backbone(
    resolved: ResolvedModel, dtype: torch.dtype, kwargs: dict
) -> nn.Module:
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _HideScoreHeadReport()
    report_logger.addFilter(report_filter)
    try:
        return AutoModel.from_pretrained(resolved.path, dtype=dtype, **kwargs)
    finally:
        report_logger.removeFilter(report_filter)


def _load_score_head(
    resolved: ResolvedModel,
    backbone: nn.Module,
    dtype: torch.dtype,
    model_kind: str,
    output_dim: str,
) -> nn.Linear:
    """Read ``score_head.weight`` of shape (output_dim, hidden) into a Linear layer.

    Raises:
        ModelLoadError: the checkpoint has no head, or a head of another shape.
    """
    hidden_size = backbone.config.get_text_config().hidden_size
    expected = f"({output_dim}, {hidden_size})"
    try:
        weight = read_checkpoint_tensor(resolved, SCORE_HEAD_KEY)
    except ModelLoadError as error:
        raise ModelLoadError(
            f"{error}; a {model_kind} stores its head as {SCORE_HEAD_KEY} with "
            f"shape {expected}"
        ) from None
    if weight.dim() != 2 or weight.shape[1] != hidden_size:
        raise ModelLoadError(
            f"{SCORE_HEAD_KEY} of {resolved.path!r} has shape {tuple(weight.shape)}; "
            f"a {model_kind} needs {expected}"
        )
    # NOTE: a checkpoint's score_head.bias is not read, and transformers' load
    # report lists it as an unexpected key of the backbone.
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(weight.to(dtype))
    return head


def read_checkpoint_tensor(resolved: ResolvedModel, key: str) -> torch.Tensor:
    """Read one tensor by name from a checkpoint's weight files.

    Raises:
        ModelLoadError: no weight file of the checkpoint contains ``key``.
    """
    for name in WEIGHT_FILES:
        path = _checkpoint_file(resolved, name)
        if path is None:
            continue
        if name.endswith(".index.json"):
            shard = json.loads(path.read_text())["weight_map"].get(key)
            path = _checkpoint_file(resolved, shard) if shard else None
            if path is None:
                continue
        tensor = _read_tensor(path, key)
        if tensor is not None:
            return tensor
    raise ModelLoadError(
        f"checkpoint {resolved.path!r} has no tensor {key!r} in its weight files "
        f"({', '.join(WEIGHT_FILES)})"
    )


def _checkpoint_file(resolved: ResolvedModel, name: str) -> Path | None:
    folder = Path(resolved.path).expanduser()
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(resolved.path, name, revision=resolved.revision))
    except EntryNotFoundError:
        return None


def _read_tensor(path: Path, key: str) -> torch.Tensor | None:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor(key) if key in handle.keys() else None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get(key)
