"""Machine-made data: template synthesis, answers and LLM judgements from OpenAI-compatible endpoints.

`synth` writes questions from templates; `generate` answers a prompt dataset; `judge` turns answers into
preference pairs. `generate` and `judge` share one client (`client.py`: concurrency limit, retries,
timeouts, usage and cost) and one job runner (`runner.py`: resume by row id, durable records, progress).
"""
