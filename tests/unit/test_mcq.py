"""Multiple-choice evaluator: forced answers give 100%, the tiny model's letter logits give the accuracy
computed by hand, MMLU (headerless) and C-Eval (id column) files read, clear layout errors."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.data import get_template
from alignlab.eval.mcq import (
    CHOICES,
    TaskError,
    evaluate_task,
    load_task,
    logit_scorer,
    question_text,
)
from tests.conftest import ROOT, tiny_model

DEMO = ROOT / "data" / "eval"


def test_forced_answers_score_100_and_wrong_ones_0(tokenizer):
    subjects, mapping, split = load_task(str(DEMO), "size_advisor_test")
    template = get_template("qwen3_nothink", tokenizer)
    answer_of = {question_text(r, "zh"): r["answer"] for s in subjects.values() for r in s[split]}

    def forced(prompts, shift=0):
        out = torch.zeros(len(prompts), 4)
        for i, ids in enumerate(prompts):
            text = tokenizer.decode(ids)
            block = text.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0].split("\n\n")[-1]
            out[i, (CHOICES.index(answer_of[block]) + shift) % 4] = 1.0
        return out

    right = evaluate_task(subjects, mapping, split, tokenizer, template, forced, n_shot=2, lang="zh")
    assert right["average"] == 100.0 and right["questions"] == 120
    assert right["subjects"] == {"size_en": 100.0, "size_zh": 100.0}
    assert right["categories"] == {"English": 100.0, "Chinese": 100.0}
    wrong = evaluate_task(subjects, mapping, split, tokenizer, template, lambda p: forced(p, 1), n_shot=0, lang="zh")
    assert wrong["average"] == 0.0


def write_task(root, subject_rows, dev_rows):
    (root / "hand" / "test").mkdir(parents=True)
    (root / "hand" / "dev").mkdir()
    # MMLU style: no header; C-Eval style: id column + header
    (root / "hand" / "test" / "sizes_test.csv").write_text("\n".join(",".join(r) for r in subject_rows) + "\n")
    (root / "hand" / "dev" / "sizes_dev.csv").write_text(
        "id,question,A,B,C,D,answer,explanation\n" + "\n".join(f"{i},{','.join(r)},x" for i, r in enumerate(dev_rows)))


def test_tiny_model_accuracy_equals_the_hand_computed_one(tokenizer, tmp_path):
    rows = [["身高 95 cm 选哪个码？", "90", "100", "110", "120", "B"], ["What fits 120 cm?", "120", "130", "80", "90", "B"],
            ["宝宝 70 cm", "80", "90", "100", "110", "A"], ["Size for 104 cm?", "100", "110", "120", "130", "B"],
            ["孩子 116 cm", "110", "120", "130", "80", "B"], ["Kid of 88 cm", "90", "100", "80", "110", "A"]]
    write_task(tmp_path, rows, [["示例 100 cm", "110", "100", "90", "80", "A"]])
    subjects, mapping, split = load_task(str(tmp_path), "hand_test")
    assert subjects["sizes"]["dev"][0]["answer"] == "A" and len(subjects["sizes"]["test"]) == 6
    template = get_template("qwen3_nothink", tokenizer)
    model = tiny_model(seed=3, init_range=0.3).eval()
    result = evaluate_task(subjects, mapping, split, tokenizer, template, logit_scorer(model, tokenizer, 4),
                           n_shot=1, lang="en")
    letters = [tokenizer.encode(c, add_special_tokens=False)[-1] for c in "ABCD"]
    expected = []
    for r in rows:  # by hand: one unpadded forward per question, the prompt written out as text
        text = ("<|im_start|>user\nThe following are multiple choice questions (with answers) about sizes.\n\n"
                "示例 100 cm\nA. 110\nB. 100\nC. 90\nD. 80\nAnswer:<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
                f"<|im_start|>user\n{r[0]}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:<|im_end|>\n"
                "<|im_start|>assistant\n")
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1, letters]
        expected.append("ABCD"[int(logits.argmax())] == r[5])
    assert result["average"] == pytest.approx(100 * sum(expected) / len(expected))


def test_layout_errors_name_the_problem(tmp_path):
    with pytest.raises(TaskError, match="<folder>_<split>"):
        load_task(str(tmp_path), "mmlu")
    with pytest.raises(TaskError, match="does not exist"):
        load_task(str(tmp_path), "mmlu_test")
    (tmp_path / "bad" / "test").mkdir(parents=True)
    (tmp_path / "bad" / "test" / "x_test.csv").write_text("question,A,B,C,D,answer\nq,1,2,3,4,E\n")
    with pytest.raises(TaskError, match=r"x_test.csv, row 2: answer 'E'"):
        load_task(str(tmp_path), "bad_test")


def test_eval_cli_writes_results(base_model_dir, tmp_path):
    import subprocess

    from tests.integration.test_train_sft import ALIGNLAB

    run = subprocess.run([ALIGNLAB, "eval", f"model_name_or_path={base_model_dir}", "template=qwen3_nothink",
                          "task=size_advisor_test", f"task_dir={DEMO}", "n_shot=1", f"save_dir={tmp_path}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["subjects"]) == {"size_en", "size_zh"} and results["questions"] == 120
    assert "Average" in run.stdout and len(results["answers"]["size_zh"]) == 60
