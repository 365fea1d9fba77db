"""The reward of the GRPO row in bench/peers.py, importable by alignlab (`reward_funcs:
grpo_reward:ascii_share`) and by TRL's GRPOTrainer: the share of ASCII characters in a completion
(1.0 is best; a random tiny model starts near 0.3 and learns it within 20 steps)."""


def _text(completion) -> str:
    if isinstance(completion, list):  # TRL, conversational data: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return completion


def ascii_share(prompts, completions, *args, **kwargs) -> list[float]:
    texts = [_text(c) for c in completions]
    return [sum(ch.isascii() for ch in t) / max(len(t), 1) for t in texts]
