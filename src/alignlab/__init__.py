"""alignlab: fine-tune and align large language models (SFT, RM, DPO-family, KTO, PPO, GRPO)."""

__version__ = "0.1.0"
