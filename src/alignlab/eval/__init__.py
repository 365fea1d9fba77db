"""Evaluation: batched generation, task metrics."""
