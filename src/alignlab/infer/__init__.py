"""Inference: the dynamic-batching engine, vLLM engine, terminal chat and the OpenAI-compatible API."""
