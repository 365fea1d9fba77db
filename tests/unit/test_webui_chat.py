"""The Chat tab's logic without servers: the messages sent, the columns drawn (thinking folded once the
answer begins, errors as a line), streamed deltas accumulated, two columns streamed at the same time,
a server log's error line, and every status line in both languages."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest

from alignlab.webui import chat
from alignlab.webui.chat import SlotStatus, Turn


def test_messages_hold_the_system_prompt_and_answered_turns_only():
    turns = [Turn("hi", reasoning="let me think", answer="hello", done=True),
             Turn("and then?", error="the server of A stopped (exit status -9): Killed", done=True),
             Turn("2+2?", answer="4", done=True)]
    assert chat.openai_messages(turns, "Be brief.", "thanks") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},  # no thinking
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},  # the failed turn dropped
        {"role": "user", "content": "thanks"}]
    assert chat.openai_messages([], "  ", "x") == [{"role": "user", "content": "x"}]


def test_a_column_shows_thinking_open_while_it_streams_then_folded():
    thinking = [Turn("q", reasoning="step 1")]
    assert chat.render(thinking, "Thinking") == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "step 1", "metadata": {"title": "Thinking", "status": "pending"}}]
    answered = chat.render([Turn("q", reasoning="step 1", answer="A.")], "思考过程")
    assert answered[1]["metadata"] == {"title": "思考过程", "status": "done"}  # Gradio folds a done thought
    assert answered[2] == {"role": "assistant", "content": "A."}
    failed = chat.render([Turn("q", error="Lower max_tokens to at most 9.", done=True)], "T", "⚠️ {error}")
    assert failed == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "⚠️ Lower max_tokens to at most 9."}]


def _chunk(content=None, reasoning=None, choices=True):
    extra = {"reasoning_content": reasoning} if reasoning is not None else {}
    delta = SimpleNamespace(content=content, model_extra=extra)
    return SimpleNamespace(choices=[SimpleNamespace(delta=delta)] if choices else [])


def test_streamed_deltas_accumulate_into_thinking_and_answer():
    chunks = [_chunk(content=""), _chunk(reasoning="Tall"), _chunk(reasoning=" child."), _chunk(content="Size"),
              _chunk(content=" 100"), _chunk(choices=False)]  # role chunk, thinking, answer, usage chunk
    steps = list(chat.accumulate(chunks, Turn("q")))
    assert [(t.reasoning, t.answer) for t in steps] == [
        ("Tall", ""), ("Tall child.", ""), ("Tall child.", "Size"), ("Tall child.", "Size 100")]
    assert all(t.user == "q" and not t.done for t in steps)


def test_both_columns_stream_at_the_same_time(monkeypatch):
    """A waits for B's first token before its second: answered one after the other, this would stall."""
    b_started = threading.Event()

    def fake_stream(server, messages, sampling, turn, stop=None):
        if server == "A":
            yield replace(turn, answer="a1")
            assert b_started.wait(5), "B did not stream while A was answering"
            yield replace(turn, answer="a1 a2", done=True)
        else:
            yield replace(turn, answer="b1")
            b_started.set()
            yield replace(turn, answer="b1 b2", done=True)

    monkeypatch.setattr(chat, "stream_turn", fake_stream)
    sampling = chat.Sampling(0, 1, 0, 8, 42, False)
    seen = list(chat.stream_side_by_side({"A": ("A", [], Turn("q")), "B": ("B", [], Turn("q"))}, sampling))
    assert seen[-1]["A"].answer == "a1 a2" and seen[-1]["B"].answer == "b1 b2"  # A's wait was answered
    assert seen[-1]["A"].done and seen[-1]["B"].done


def test_the_error_line_of_a_log_is_its_last_non_empty_line(tmp_path):
    log = tmp_path / "chat-A.log"
    log.write_text("Loading weights: 100%|###| 46/46\rdone\nTraceback (most recent call last):\n  File \"x\"\n"
                   "OSError: [Errno 98] address already in use\n\n")
    assert chat.last_error_line(log) == "OSError: [Errno 98] address already in use"
    log.write_text("")
    assert chat.last_error_line(log) == "(the log is empty)"
    assert chat.last_error_line(tmp_path / "missing.log").startswith("(no log at")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_status_line_renders_in_both_languages(lang):
    pytest.importorskip("gradio")
    from alignlab.webui.chat_tab import status_line

    lines = {s.state: status_line(lang, s) for s in [
        SlotStatus("A", "empty"), SlotStatus("A", "loading", "/m/base", seconds=3.2),
        SlotStatus("B", "ready", "/m/base", "saves/dpo-1", 41234, 812.4),
        SlotStatus("B", "failed", error="alignlab api: `model_name_or_path` /x is not a local folder"),
        SlotStatus("B", "stopped", "/m/base", error="the server of B stopped (exit status -9): Killed")]}
    assert "**A**" in lines["empty"] and "`/m/base`" in lines["loading"] and " 3 " in lines["loading"]
    assert "`/m/base` + `saves/dpo-1`" in lines["ready"] and "41234" in lines["ready"] and "812 MB" in lines["ready"]
    assert "'model_name_or_path' /x is not a local folder" in lines["failed"]  # no backtick breaks the code span
    assert "exit status -9" in lines["stopped"]
