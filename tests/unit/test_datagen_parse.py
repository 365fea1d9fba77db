"""Judge-reply parsing (strict, fenced, first balanced object, schema), retry delays and Retry-After, the
usage/cost ledger, and torn-line recovery of the record files."""

from __future__ import annotations

import email.utils
import json
import random
import time

import pytest

from alignlab.config import ConfigError
from alignlab.datagen.client import MAX_BACKOFF_S, Ledger, parse_retry_after, retry_delay
from alignlab.datagen.parse import (
    VerdictError,
    check_improve_verdict,
    check_pairwise_verdict,
    parse_json_object,
)
from alignlab.datagen.runner import read_records

VERDICT = {"is_good": False, "reason": "太短", "improved_answer": "建议选 90 码 {留出空间}"}


@pytest.mark.parametrize("reply", [
    json.dumps(VERDICT, ensure_ascii=False),
    "```json\n" + json.dumps(VERDICT, ensure_ascii=False, indent=2) + "\n```",
    "Sure! ```\n" + json.dumps(VERDICT, ensure_ascii=False) + "```",
    "Verdict {draft}: " + json.dumps(VERDICT, ensure_ascii=False) + " -- end }",
    "先说明 {\"x\": } 然后 " + json.dumps(VERDICT, ensure_ascii=False),
])
def test_the_verdict_is_found_strict_fenced_or_embedded(reply):
    assert parse_json_object(reply) == VERDICT


@pytest.mark.parametrize("reply, problem", [
    ("", "the reply is empty"),
    ("looks good to me", "holds no JSON object"),
    ("[1, 2]", "holds no JSON object"),
    ("```json\n{\"is_good\": true,\n```", "holds no JSON object"),
])
def test_replies_without_an_object_are_verdict_errors(reply, problem):
    with pytest.raises(VerdictError, match=problem):
        parse_json_object(reply)


def test_schemas():
    assert check_improve_verdict({"is_good": True, "reason": " ok "}, "a") == {"is_good": True, "reason": "ok"}
    assert check_improve_verdict(VERDICT, "a")["improved_answer"] == VERDICT["improved_answer"]
    for verdict, problem in [({"is_good": "yes", "reason": "r"}, "`is_good` must be true or false"),
                             ({"is_good": True}, "`reason` must be a string"),
                             ({"is_good": False, "reason": "r", "improved_answer": ""}, "`improved_answer` is empty"),
                             ({"is_good": False, "reason": "r", "improved_answer": " the  answer"},
                              "repeats the original")]:
        with pytest.raises(VerdictError, match=problem):
            check_improve_verdict(verdict, "the answer")
    assert check_pairwise_verdict({"winner": " b", "reason": "r"})["winner"] == "B"
    assert check_pairwise_verdict({"winner": "TIE", "reason": "r"})["winner"] == "tie"
    with pytest.raises(VerdictError, match="`winner` must be"):
        check_pairwise_verdict({"winner": "first", "reason": "r"})


def test_retry_delay_doubles_with_jitter_caps_and_honours_retry_after():
    rng = random.Random(0)
    for attempt in range(8):
        delay = retry_delay(attempt, 0.5, None, rng)
        full = min(0.5 * 2 ** attempt, MAX_BACKOFF_S)
        assert full / 2 <= delay <= full
    assert retry_delay(0, 0.5, 7.0, rng) == 7.0  # Retry-After wins over a shorter backoff
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25 and parse_retry_after(None) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < parse_retry_after(later) <= 30
    assert parse_retry_after("soon") is None


def test_ledger_sums_tokens_by_model_and_prices_them():
    ledger = Ledger({"a": {"input": 2.0, "output": 8.0}, "b": {"input": 1, "output": 1}})
    ledger.add("a", {"prompt_tokens": 1000, "completion_tokens": 500})
    ledger.add("b", {"prompt_tokens": 10, "completion_tokens": None})
    ledger.add("a", {})
    assert ledger.total("prompt_tokens") == 1010 and ledger.total("completion_tokens") == 500
    assert ledger.cost() == pytest.approx((1000 * 2 + 500 * 8 + 10) / 1e6)
    assert Ledger().cost() is None
    with pytest.raises(ConfigError, match="`api_prices` has no price for model `c`"):
        ledger.check_prices(["a", "c"])


def test_a_torn_last_line_is_cut_and_other_damage_is_an_error(tmp_path):
    path = tmp_path / "generated.jsonl"
    path.write_text('{"id": 1, "output": "a"}\n{"id": 2, "output": "b"}\n{"id": 3, "out')
    assert [r["id"] for r in read_records(path)] == [1, 2]
    assert path.read_text().endswith('"b"}\n')  # appending goes on after the last whole record
    path.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(Exception, match="line 2 is not JSON"):
        read_records(path)
