"""Reward sources for ppo/grpo, one interface: `score(rollout) -> tensor of shape (N,)`.

reward_model_type lora (a reward adapter + value head trained by stage rm on the policy's base),
full (a reward model folder with value_head.safetensors), api (an HTTP endpoint speaking
LLaMA-Factory's /v1/score/evaluation shape), or `reward_funcs` (Python functions receiving the
prompts, completions and dataset rows), combined with weights.
"""

from __future__ import annotations

import importlib
import json
import re
import urllib.request
from pathlib import Path

import torch

from ..config import ConfigError, split_list
from ..errors import UserError


class RewardError(RuntimeError, UserError):
    """A reward source answered something unusable (wrong count of scores)."""


BOXED = re.compile(r"\\boxed\{([^}]*)\}")
ANSWER = re.compile(r"(?:answer|答案)\s*[:：]\s*(\S+)", re.IGNORECASE)


def _matches(pattern: re.Pattern, text: str) -> set[str]:
    """Every non-empty captured group (or whole match) of `pattern` in `text`, stripped of end punctuation."""
    found = set()
    for match in pattern.finditer(text):
        groups = [g for g in match.groups() if g] or [match.group(0)]
        found.update(g.strip().rstrip("。.") for g in groups)
    return found - {""}


def extract_answer(text: str, pattern: str | None = None) -> str | None:
    """The one answer a completion gives: what `pattern` (`answer_regex`) captures, else \\boxed{...},
    else "answer: ..."; None when it gives none or several different ones."""
    for candidate in ([re.compile(pattern)] if pattern else [BOXED, ANSWER]):
        found = _matches(candidate, text)
        if len(found) == 1:
            return found.pop()
    return None


def exact_label(prompts, completions, rows, answer_pattern: str | None = None, **_) -> list[float]:
    """1 when the extracted answer equals the row's `label`, else 0."""
    return [float(extract_answer(c, answer_pattern) == str(r.get("label"))) for c, r in zip(completions, rows)]


def regex_format(prompts, completions, rows, pattern: str | None = None, **_) -> list[float]:
    """1 when the completion matches `reward_regex` (re.search), else 0."""
    if not pattern:
        raise ConfigError("reward function regex_format needs `reward_regex`: set the pattern it looks for.")
    return [float(re.search(pattern, c) is not None) for c in completions]


def length_penalty(prompts, completions, rows, lengths=None, max_new_tokens: int = 1, **_) -> list[float]:
    """-(completion tokens / max_new_tokens): prefers shorter answers."""
    return [-n / max_new_tokens for n in lengths]


BUILTINS = {"exact_label": exact_label, "regex_format": regex_format, "length_penalty": length_penalty}


def parse_reward_funcs(spec: str) -> list[tuple[str, callable, float]]:
    funcs = []
    for item in split_list(spec):
        name, _, weight = item.partition("=")
        name = name.strip()
        if name in BUILTINS:
            fn = BUILTINS[name]
        elif ":" in name:
            module, _, attr = name.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        else:
            raise ConfigError(f"Unknown reward function {name!r}: use a built-in ({', '.join(BUILTINS)}) or "
                             "`module:function`.")
        funcs.append((name, fn, float(weight) if weight else 1.0))
    return funcs


class FunctionReward:
    def __init__(self, spec: str, pattern: str | None, max_new_tokens: int, answer_pattern: str | None = None):
        self.funcs = parse_reward_funcs(spec)
        self.extra = {"pattern": pattern, "max_new_tokens": max_new_tokens, "answer_pattern": answer_pattern}

    def __call__(self, rollout) -> torch.Tensor:
        total = torch.zeros(len(rollout.completions))
        for name, fn, weight in self.funcs:
            values = fn(rollout.prompts, rollout.completions, rollout.rows, lengths=rollout.lengths, **self.extra)
            if len(values) != len(total):
                raise RewardError(f"reward function {name} returned {len(values)} values for {len(total)} completions.")
            total += weight * torch.tensor(values, dtype=torch.float)
        return total


class ModelReward:
    """A value-head reward model scoring prompt + completion as the template renders them."""

    def __init__(self, cfg, tokenizer, template, device):
        from copy import deepcopy

        from ..model.adapter import init_adapter
        from ..model.loader import load_model
        from ..model.value_head import ValueHeadModel

        f = cfg.finetuning
        model_args, finetuning = deepcopy(cfg.model), deepcopy(f)
        finetuning.finetuning_type = "lora"
        model_args.train_from_scratch = False
        model_args.quantization_bit = f.reward_model_quantization_bit
        if f.reward_model_type == "lora":  # a reward adapter on the policy's base
            model_args.adapter_name_or_path = ",".join(filter(None, [cfg.model.adapter_name_or_path, f.reward_model]))
            head_dir = f.reward_model
        else:
            model_args.model_name_or_path = f.reward_model
            model_args.adapter_name_or_path = f.reward_model_adapters
            head_dir = f.reward_model_adapters or f.reward_model
        backbone = init_adapter(load_model(tokenizer, model_args), model_args, finetuning, is_trainable=False)
        self.model = ValueHeadModel(backbone)
        self.model.load_head(head_dir)
        self.model.to(device).eval().requires_grad_(False)
        self.tokenizer, self.template, self.device = tokenizer, template, device

    def __call__(self, rollout) -> torch.Tensor:
        return self.model.score_answers(self.tokenizer, self.template, rollout.messages, rollout.systems,
                                        rollout.completions, batch_size=len(rollout.completions))


class ApiReward:
    """POST {"model": ..., "messages": [texts]} to the URL, read {"scores": [...]}."""

    def __init__(self, url: str, tokenizer, template, api_key: str | None = None, timeout: float = 60):
        self.url, self.tokenizer, self.template = url, tokenizer, template
        self.api_key, self.timeout = api_key, timeout

    def __call__(self, rollout) -> torch.Tensor:
        texts = [self.template.render(self.tokenizer, m + [{"role": "assistant", "content": c}], s)
                 for m, s, c in zip(rollout.messages, rollout.systems, rollout.completions)]
        body = json.dumps({"model": "reward", "messages": texts}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            scores = json.loads(response.read())["scores"]
        if len(scores) != len(texts):
            raise RewardError(f"The reward API returned {len(scores)} scores for {len(texts)} texts.")
        return torch.tensor(scores, dtype=torch.float)


def check_reward_source(cfg) -> None:
    """Stop before any model loads when the reward source cannot work (ppo, grpo)."""
    f = cfg.finetuning
    if f.reward_funcs:
        names = [name for name, _fn, _weight in parse_reward_funcs(f.reward_funcs)]
        if "regex_format" in names and not f.reward_regex:
            raise ConfigError("reward function regex_format needs `reward_regex`: set the pattern it looks for.")
        return
    if not f.reward_model:
        raise ConfigError("ppo/grpo need a reward: set `reward_funcs` or `reward_model` (+ `reward_model_type`).")
    if f.reward_model_type != "api" and not Path(f.reward_model).is_dir():
        raise ConfigError(f"`reward_model: {f.reward_model}` is not a folder: give the output_dir of a stage rm run "
                          "(reward_model_type lora or full), or an http(s) URL with `reward_model_type: api`.")
    check_reward_gate(cfg)


def check_reward_gate(cfg) -> None:
    """A reward model whose stage rm run reported `rm_ready: false` (held-out accuracy under
    `rm_min_accuracy`) is refused unless `rm_gate_override: true`, which the run config then records."""
    f = cfg.finetuning
    if f.reward_model_type == "api":
        return
    results = Path(f.reward_model_adapters or f.reward_model) / "all_results.json"
    try:
        metrics = json.loads(results.read_text())
    except (OSError, ValueError):
        return
    if metrics.get("rm_ready") is False and not cfg.studio.rm_gate_override:
        raise ConfigError(f"reward_model {f.reward_model}: its held-out accuracy {metrics.get('eval_accuracy', 0):.3f} "
                          f"is below the rm_min_accuracy it was trained with ({results}: rm_ready false). Annotate more "
                          "pairs and train it again, or set `rm_gate_override: true` to use it anyway (recorded in the run).")


def build_reward(cfg, tokenizer, template, device):
    f = cfg.finetuning
    if f.reward_funcs:
        return FunctionReward(f.reward_funcs, f.reward_regex, cfg.generating.max_new_tokens, f.answer_regex)
    if not f.reward_model:
        raise ConfigError("ppo/grpo need a reward: set `reward_funcs` or `reward_model` (+ `reward_model_type`).")
    if f.reward_model_type == "api":
        import os

        return ApiReward(f.reward_model, tokenizer, template, os.environ.get("REWARD_API_KEY"))
    return ModelReward(cfg, tokenizer, template, device)
