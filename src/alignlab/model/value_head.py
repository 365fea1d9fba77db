"""A scalar value head on a causal LM: reward models (stage rm) and, later, PPO critics.

The head is saved as `value_head.safetensors` (keys `v_head.summary.weight/bias`, as TRL and
LLaMA-Factory write them) beside the adapter or model; the score of a sequence is the head's value
at its last non-padding token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HEAD_FILE = "value_head.safetensors"


class ValueHead(nn.Module):
    """hidden states (..., H) -> one value per position (...); saved as value_head.safetensors."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)

    def save(self, output_dir) -> None:
        state = {f"v_head.summary.{k}": v.detach().cpu().contiguous() for k, v in self.summary.state_dict().items()}
        save_file(state, str(Path(output_dir) / HEAD_FILE))

    def load(self, path) -> None:
        state = load_file(str(Path(path) / HEAD_FILE))
        self.summary.load_state_dict({k.split(".")[-1]: v for k, v in state.items()})


class ValueHeadModel(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.v_head = ValueHead(backbone.config.hidden_size)

    @property
    def config(self):
        return self.backbone.config

    def _decoder(self):
        base = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
        return getattr(base, base.base_model_prefix)

    def forward(self, input_ids, attention_mask=None, **kwargs) -> torch.Tensor:
        """Per-token values (B, T): the head on the last hidden states (no LM head is computed)."""
        hidden = self._decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.v_head(hidden)

    @staticmethod
    def last_token_scores(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The value at each row's last non-padding token (right padding)."""
        last = attention_mask.long().sum(-1) - 1
        return values.gather(1, last.unsqueeze(1)).squeeze(1)

    def scores(self, input_ids, attention_mask) -> torch.Tensor:
        return self.last_token_scores(self(input_ids, attention_mask), attention_mask)

    @torch.inference_mode()
    def score_rows(self, rows: list[list[int]], pad_id: int | None, batch_size: int = 16) -> torch.Tensor:
        """The score of each token row (right-padded in batches of `batch_size`), as float32 on the CPU."""
        from ..data.collate import pad_rows

        device = next(self.parameters()).device
        scores = []
        for start in range(0, len(rows), batch_size):
            ids, mask = pad_rows(rows[start:start + batch_size], pad_id, side="right", device=device)
            scores.append(self.scores(ids, mask).float().cpu())
        return torch.cat(scores) if scores else torch.zeros(0)

    def score_answers(self, tokenizer, template, prompts: list[list[dict]], systems: list[str | None],
                      answers: list[str], tools: list[str | None] | None = None, batch_size: int = 16) -> torch.Tensor:
        """The score of each answer to its prompt (messages), encoded as stage rm trained on pairs:
        the template's one-turn prompt + answer."""
        rows = []
        for i, (messages, system, answer) in enumerate(zip(prompts, systems, answers)):
            prompt_ids, answer_ids = template.encode_oneturn(
                tokenizer, [*messages, {"role": "assistant", "content": answer}], system, tools[i] if tools else None)
            rows.append(prompt_ids + answer_ids)
        return self.score_rows(rows, tokenizer.pad_token_id, batch_size)

    def save_head(self, output_dir: str) -> None:
        self.v_head.save(output_dir)

    def load_head(self, path: str) -> None:
        self.v_head.load(path)
