"""`alignlab data generate`: an answer for every row of a prompt dataset from an OpenAI-compatible endpoint,
in `output_dir/generated.jsonl` (failures with their reason in failures.jsonl), resumable by row id."""

from __future__ import annotations

from ..config import ConfigError
from .client import ChatEndpoint, Ledger, RequestFailed
from .register import file_name_in, register_datasets
from .rows import ALPACA_COLUMNS, PromptRow, load_rows
from .runner import RowLog, output_folder, run_job

GENERATED = "generated.jsonl"


def require_endpoint(cfg, command: str) -> None:
    """`api_base` and `api_model` are set."""
    for key in ("api_base", "api_model"):
        if not getattr(cfg.datagen, key):
            raise ConfigError(f"`alignlab data {command}` needs `{key}` (e.g. api_base=http://127.0.0.1:8000/v1 "
                              "api_model=NAME for `alignlab api`).")


def run_generate(cfg) -> dict:
    """Answer every unfinished row; register the answers as an SFT dataset when `register_as` is set."""
    d = cfg.datagen
    require_endpoint(cfg, "generate")
    folder = output_folder(cfg, "generate")
    rows = load_rows(cfg.data, cfg.data.dataset, kind="prompt", command="generate")
    ledger = Ledger(d.api_prices)
    ledger.check_prices([d.api_model])
    endpoint = ChatEndpoint.from_config(cfg, ledger)

    async def answer(row: PromptRow) -> tuple[str, dict]:
        reply = await endpoint.chat(row.messages())
        if not reply.text.strip():
            raise RequestFailed(f"empty answer (finish_reason {reply.finish_reason!r})")
        return GENERATED, {**row.record(), "output": reply.text, "model": d.api_model,
                           "finish_reason": reply.finish_reason, "usage": reply.usage}

    summary = run_job("generate", rows, answer, RowLog(folder, (GENERATED,)), [endpoint], ledger,
                      workers=2 * d.max_concurrency)
    if d.register_as:
        register_datasets(cfg.data.dataset_dir, {d.register_as: {
            "file_name": file_name_in(cfg.data.dataset_dir, folder / GENERATED),
            "columns": {**ALPACA_COLUMNS, "response": "output"}}})
    return summary
