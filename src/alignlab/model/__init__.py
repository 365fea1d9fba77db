"""Model side: tokenizers, models, adapters, value heads, quantisation."""

from .tokenizer import load_tokenizer

__all__ = ["load_tokenizer"]
