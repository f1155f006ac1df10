"""Participants: one model in one role, and its rows of KV cache during decoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .errors import GuidanceError, SpecError
from .kv_cache import growing_cache
from .specs import ModelRef

__all__ = ["FedValues", "Participant", "ParticipantState", "token_values"]

# Upper bound on the bytes of one forward pass's logits. Longer inputs are fed
# in blocks of positions, so logits over a large vocabulary stay bounded.
MAX_LOGITS_BYTES = 256 * 2**20


@dataclass(eq=False)
class Participant:
    """One model in one role with its own prompt template.

    Attributes:
        ref: the model reference, template included.
        head: ``"causal_lm"`` or ``"token_rm"``.
        tag: the tag of the requests it serves (see ``ParticipantRequest``).
        level: ``"token"`` participants run at every decoding step on base
            token ids; ``"chunk"`` participants catch up at chunk boundaries.
        tracks: per-token values recorded for every response token.
        model: the loaded model, shared with other participants of the same files.
        tokenizer: the model's tokenizer.
        shares_base_vocabulary: whether base token ids can be fed as they are.
        output_size: size of the model's output dimension.
    """

    ref: ModelRef
    head: str
    tag: str
    level: str
    tracks: frozenset[str]
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    shares_base_vocabulary: bool
    output_size: int

    @property
    def key(self) -> tuple[ModelRef, str, str]:
        """Return the key of the requests this participant serves."""
        return (self.ref, self.head, self.tag)

    @property
    def label(self) -> str:
        """Return a short name for messages: the model and, for a RM, its head."""
        suffix = "" if self.head == "causal_lm" else f" ({self.head})"
        return f"{self.ref.name_or_path}{suffix}"

    @property
    def window(self) -> int | None:
        """Return the context window in tokens, or None when the config has none."""
        config = self.model.config.get_text_config()
        return getattr(config, "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompt(self, prompt: str) -> list[int]:
        """Return the token ids of the rendered template, special tokens included.

        With ``chat`` set, the rendered template is the user message of the
        tokenizer's chat template.

        A prompt that renders to no tokens starts from the BOS token (or EOS when
        the tokenizer has no BOS), so that there is a state to predict from.
        """
        if self.ref.chat:
            ids = self._encode_chat(self.ref.render(prompt))
        else:
            ids = list(self.tokenizer(self.ref.render(prompt))["input_ids"])
        if ids:
            return ids
        start = self.tokenizer.bos_token_id
        if start is None:
            start = self.tokenizer.eos_token_id
        if start is None:
            raise SpecError(
                f"the prompt {prompt!r} renders to no tokens for {self.label!r} and "
                "its tokenizer has no BOS or EOS token to start from; put text "
                "around '{prompt}' in the template"
            )
        return [start]

    def _encode_chat(self, message: str) -> list[int]:
        messages = [{"role": "user", "content": message}]
        if self.ref.system is not None:
            messages.insert(0, {"role": "system", "content": self.ref.system})
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        # The chat template writes any BOS token itself.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        """Return the token ids of response text, without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class FedValues:
    """Per-row tracked values of tokens fed in one call, shape (rows,) each."""

    total: torch.Tensor
    last: torch.Tensor
    count: torch.Tensor


def token_values(
    output: torch.Tensor, tokens: torch.Tensor, track: str
) -> torch.Tensor:
    """Return one tracked value per token.

    Args:
        output: outputs that predict the tokens, shape (..., vocab).
        tokens: token ids of shape (...), matching ``output`` without its last dim.
        track: ``"logprob"`` for log-softmax at the token, ``"output"`` for the
            raw output at the token (Q(s, a) of a token reward model).

    Returns:
        float64 tensor of the shape of ``tokens``.
    """
    if track == "logprob":
        output = torch.log_softmax(
            output.float() if output.dtype != torch.float64 else output, -1
        )
    values = output.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return values.double()


class ParticipantState:
    """The KV cache, attention mask and positions of participants in one model.

    Participants that share a model and run at the token level share one
    state, so that one forward pass serves all of them: cache row
    ``m * len(rows) + i`` is member ``m``'s copy of global decoder row
    ``rows[i]``. Prompts are left padded. Tokens appended later may leave
    masked holes on the right of rows that received fewer tokens than others.
    """

    def __init__(self, members: list[Participant]) -> None:
        self.members = members
        self.participant = members[0]
        self.device = self.participant.device
        model = self.participant.model
        self.cache = growing_cache(model.config)
        if any(m.level == "chunk" and not m.shares_base_vocabulary for m in members):
            # Text participants append and crop response tokens at every chunk.
            self.cache.activate_past_recording()
        self.rows = torch.empty(0, dtype=torch.long)
        self.mask = torch.empty(0, 0, dtype=torch.long, device=self.device)
        self.next_position = torch.empty(0, dtype=torch.long, device=self.device)
        self.fed = torch.empty(0, dtype=torch.long)
        self.output: torch.Tensor | None = None

    def member_output(self, member: int) -> torch.Tensor:
        """Return one member's output after each row's last token, (rows, vocab)."""
        count = self.rows.numel()
        return self.output[member * count : (member + 1) * count]

    def prefill(self, prompt_ids: list[list[list[int]]], rows: torch.Tensor) -> None:
        """Run every member's prompts, left padded, and keep their last output.

        Args:
            prompt_ids: for each member, the token ids of each prompt.
            rows: the global row of each prompt, shape (prompts,).
        """
        flat = [ids for member_ids in prompt_ids for ids in member_ids]
        width = max(len(ids) for ids in flat)
        pad = _pad_token_id(self.participant.tokenizer)
        input_ids = torch.full((len(flat), width), pad, dtype=torch.long)
        mask = torch.zeros((len(flat), width), dtype=torch.long)
        for i, ids in enumerate(flat):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            mask[i, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(input_ids, mask, positions, logits_to_keep=1)
        self.output = logits[:, -1]
        self.mask = mask
        self.next_position = mask.sum(-1)
        self.rows = rows
        self.fed = torch.zeros(len(flat), dtype=torch.long)

    def select(self, positions: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep rows ``positions`` (in this order) of every member as ``rows``."""
        count = self.rows.numel()
        positions = torch.cat([positions + m * count for m in range(len(self.members))])
        device_positions = positions.to(self.device)
        self.cache.batch_select_indices(device_positions)
        self.mask = self.mask[device_positions]
        self.next_position = self.next_position[device_positions]
        self.output = self.output[device_positions]
        self.fed = self.fed[positions]
        self.rows = rows

    def feed(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        tracks: frozenset[str] = frozenset(),
    ) -> dict[str, FedValues]:
        """Append ragged tokens to every row of every member.

        Args:
            tokens: token ids of shape (rows, n), right padded.
            lengths: number of real tokens per row, shape (rows,).
            tracks: which values to return for the fed tokens.

        Returns:
            the tracked values of the fed tokens, for each member's rows in
            turn, shape (members × rows,) each.
        """
        copies = len(self.members)
        tokens = tokens.to(self.device).repeat(copies, 1)
        lengths = lengths.to(self.device).repeat(copies)
        rows, width = tokens.shape
        self._check_window(lengths)
        sums = {
            t: torch.zeros(rows, dtype=torch.float64, device=self.device)
            for t in tracks
        }
        lasts = {
            t: torch.zeros(rows, dtype=torch.float64, device=self.device)
            for t in tracks
        }
        block = max(1, MAX_LOGITS_BYTES // (4 * rows * self.participant.output_size))
        for start in range(0, width, block):
            stop = min(start + block, width)
            offsets = torch.arange(start, stop, device=self.device)
            valid = offsets[None, :] < lengths[:, None]
            self._feed_block(tokens[:, start:stop], valid, tracks, sums, lasts)
        self.fed = self.fed + lengths.cpu()
        count = lengths.cpu()
        return {t: FedValues(sums[t].cpu(), lasts[t].cpu(), count) for t in tracks}

    def _check_window(self, lengths: torch.Tensor) -> None:
        window = self.participant.window
        if window is None or lengths.numel() == 0:
            return
        needed = int((self.next_position + lengths).max())
        if needed > window:
            raise GuidanceError(
                f"{self.participant.label!r} would need {needed} positions, more "
                f"than its context window of {window}; lower max_new_tokens or "
                "use shorter prompts"
            )

    def peek(
        self, tokens: torch.Tensor, lengths: torch.Tensor, tracks: frozenset[str]
    ) -> tuple[dict[str, FedValues], torch.Tensor]:
        """Feed tokens as ``feed`` does, then restore the state from before.

        Returns:
            the tracked values of the fed tokens, and the output after each
            row's last fed token, shape (rows, vocab).
        """
        saved = (self.mask, self.next_position, self.output, self.fed)
        length_before = self.cache.get_seq_length()
        values = self.feed(tokens, lengths, tracks)
        output = self.output
        added = self.cache.get_seq_length() - length_before
        if added:
            self.cache.crop(-added)
        self.mask, self.next_position, self.output, self.fed = saved
        return values, output

    def _feed_block(
        self,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        tracks: frozenset[str],
        sums: dict[str, torch.Tensor],
        lasts: dict[str, torch.Tensor],
    ) -> None:
        mask = valid.long()
        positions = self.next_position[:, None] + (mask.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, mask], dim=-1)
        logits = self._forward(tokens, self.mask, positions)
        if tracks:
            self._track_block(logits, tokens, valid, tracks, sums, lasts)
        counts = mask.sum(-1)
        if bool(valid.all()):
            self.output = logits[:, -1]
        else:
            last_index = (counts - 1).clamp(min=0)
            last_output = logits.gather(
                1, last_index[:, None, None].expand(-1, 1, logits.shape[-1])
            ).squeeze(1)
            self.output = torch.where((counts > 0)[:, None], last_output, self.output)
        self.next_position = self.next_position + counts

    def _track_block(
        self,
        logits: torch.Tensor,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        tracks: frozenset[str],
        sums: dict[str, torch.Tensor],
        lasts: dict[str, torch.Tensor],
    ) -> None:
        # The output that predicts token j is the one after token j - 1.
        predicting = torch.cat([self.output[:, None], logits[:, :-1]], dim=1)
        last_index = (valid.long().sum(-1) - 1).clamp(min=0)
        for track in tracks:
            values = token_values(predicting, tokens, track)
            values = torch.where(valid, values, 0.0)
            sums[track] += values.sum(-1)
            last = values.gather(-1, last_index[:, None]).squeeze(-1)
            lasts[track] = torch.where(valid.any(-1), last, lasts[track])

    def _forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        with torch.inference_mode():
            output = self.participant.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=logits_to_keep,
            )
        logits = output.logits
        return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0
