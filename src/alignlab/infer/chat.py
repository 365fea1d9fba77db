"""`alignlab chat`: a terminal conversation with history and streamed answers.

Type a message and press Enter; `clear` forgets the history, `exit` quits. The system prompt is
`default_system` (or the template's own); reasoning models print their thinking dimmed and keep
only the answer in the history.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

from .engine import SamplingParams, split_reasoning

DIM, RESET = "\033[2m", "\033[0m"


class ChatSession:
    """A conversation with one engine: `reply` streams (kind, text) pieces and records the turn."""

    def __init__(self, engine, tokenizer, template, params: SamplingParams, system: str | None = None):
        self.engine, self.tokenizer, self.template, self.params = engine, tokenizer, template, params
        self.system = system
        self.messages: list[dict] = []

    def prompt_ids(self, query: str) -> list[int]:
        return self.template.encode_prompt(self.tokenizer, [*self.messages, {"role": "user", "content": query}],
                                           self.system)

    def reply(self, query: str) -> Iterator[tuple[str, str]]:
        """Yield ("reasoning" | "answer", new text) as the model writes; the turn joins the history."""
        text, sent = "", {"reasoning": "", "answer": ""}
        for event in self.engine.stream(self.prompt_ids(query), self.params):
            text += event.delta
            reasoning, answer = split_reasoning(self.template, text, final=event.finished)
            for kind, full in (("reasoning", reasoning or ""), ("answer", answer)):
                if full.startswith(sent[kind]) and len(full) > len(sent[kind]):
                    yield kind, full[len(sent[kind]):]
                    sent[kind] = full
            if event.finish_reason == "error":
                raise RuntimeError(event.error)
        self.messages += [{"role": "user", "content": query}, {"role": "assistant", "content": sent["answer"]}]

    def clear(self) -> None:
        self.messages = []


def chat_loop(session: ChatSession, read: Callable[[str], str] = input, out=sys.stdout) -> None:
    """The terminal loop: read a line, stream the answer; `clear` and `exit` are commands."""
    color = out.isatty()
    out.write("Welcome to alignlab chat: `clear` forgets the history, `exit` quits.\n")
    while True:
        try:
            query = read("\nUser: ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        if query == "exit":
            return
        if query == "clear":
            session.clear()
            out.write("History cleared.\n")
            continue
        if not query:
            continue
        out.write("Assistant: ")
        for kind, piece in session.reply(query):
            out.write(f"{DIM}{piece}{RESET}" if kind == "reasoning" and color else piece)
            out.flush()
        out.write("\n")
        out.flush()


def run_chat(cfg) -> None:
    from ..config import ConfigError
    from .engine import build_engine

    loaded, engine = build_engine(cfg)
    if not engine.can_generate:
        raise ConfigError("This is a reward model (it has a value head): it scores texts and cannot chat. "
                         "Serve it with `alignlab api` and POST /v1/score/evaluation.")
    params = SamplingParams.from_generating_args(cfg.generating)
    try:
        chat_loop(ChatSession(engine, loaded.tokenizer, loaded.template, params, cfg.data.default_system))
    finally:
        engine.close()
