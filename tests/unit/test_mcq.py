"""Multiple-choice evaluator: forced answers give 100%, the tiny model's letter logits give the picks
computed by hand (bare-letter token ids, padded batches), accuracy averages over questions, a one-letter
model scores that letter's share (why the demo scored below 25%), several models in one eval run,
MMLU (headerless) and C-Eval (id column) files read, clear layout errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from alignlab.data import get_template
from alignlab.eval.mcq import (
    CHOICES,
    TaskError,
    evaluate_task,
    format_results,
    load_task,
    logit_scorer,
    question_text,
)
from tests.conftest import ROOT, TINY, tiny_model

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


HAND_ROWS = [["身高 95 cm 选哪个码？", "90", "100", "110", "120", "B"], ["What fits 120 cm?", "120", "130", "80", "90", "B"],
             ["宝宝 70 cm", "80", "90", "100", "110", "A"], ["Size for 104 cm?", "100", "110", "120", "130", "B"],
             ["孩子 116 cm", "110", "120", "130", "80", "B"], ["Kid of 88 cm", "90", "100", "80", "110", "A"],
             ["A much longer question about the size of a winter coat for a child who is 131 cm tall", "130", "140",
              "120", "110", "B"]]


def test_letter_ids_are_the_bare_letters_a_worked_answer_holds(tokenizer):
    """The scored ids are the bare letters (35-38 in the tiny BPE), the very ids a worked example's answer
    turn puts after `assistant\\n`; " A" is another token (623) and " B" two tokens, never scored."""
    template = get_template("qwen3_nothink", tokenizer)
    assert tokenizer.convert_tokens_to_ids(list("ABCD")) == [35, 36, 37, 38]
    assert tokenizer.encode(" A", add_special_tokens=False) == [623]
    assert tokenizer.encode(" B", add_special_tokens=False) == [223, 36]
    for letter, token in zip("ABCD", [35, 36, 37, 38]):
        _, answer = template.encode_oneturn(tokenizer, [{"role": "user", "content": "q\nAnswer:"},
                                                        {"role": "assistant", "content": letter}])
        assert answer[0] == token

    class Spy(torch.nn.Module):  # logits: the token id itself, so the scorer returns the columns it reads
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.arange(len(tokenizer), dtype=torch.float).expand(
                *input_ids.shape, -1)})()

    columns = logit_scorer(Spy(), tokenizer, 2)([[1, 2, 3], [4]])
    assert columns.tolist() == [[35.0, 36.0, 37.0, 38.0]] * 2


def test_tiny_model_picks_equal_the_hand_computed_ones(tokenizer, tmp_path):
    """Each pick (not only the average) equals the argmax, over the four letter ids, of one unpadded forward
    pass of the prompt written out as text; the scorer pads batches of unequal length on the right."""
    write_task(tmp_path, HAND_ROWS, [["示例 100 cm", "110", "100", "90", "80", "A"]])
    subjects, mapping, split = load_task(str(tmp_path), "hand_test")
    assert subjects["sizes"]["dev"][0]["answer"] == "A" and len(subjects["sizes"]["test"]) == 7
    template = get_template("qwen3_nothink", tokenizer)
    model = tiny_model(seed=2, init_range=0.3).eval()  # a seed whose picks vary between questions
    result = evaluate_task(subjects, mapping, split, tokenizer, template, logit_scorer(model, tokenizer, 4),
                           n_shot=1, lang="en")
    picks = []
    for r in HAND_ROWS:
        text = ("<|im_start|>user\nThe following are multiple choice questions (with answers) about sizes.\n\n"
                "示例 100 cm\nA. 110\nB. 100\nC. 90\nD. 80\nAnswer:<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
                f"<|im_start|>user\n{r[0]}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:<|im_end|>\n"
                "<|im_start|>assistant\n")
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1, [35, 36, 37, 38]]
        picks.append("ABCD"[int(torch.softmax(logits, -1).argmax())])  # LF: softmax over the 4, then argmax
    assert result["answers"]["sizes"] == picks
    assert len(set(picks)) > 1  # the check means something: the model does not pick one letter throughout
    expected = 100 * sum(p == r[5] for p, r in zip(picks, HAND_ROWS)) / len(HAND_ROWS)
    assert result["average"] == pytest.approx(expected)
    assert result["predicted_letters"] == {c: picks.count(c) for c in "ABCD"}
    assert result["answer_letters"] == {"A": 2, "B": 5, "C": 0, "D": 0}


def test_average_is_over_questions_not_over_subjects(tokenizer, tmp_path):
    """As LLaMA-Factory: a subject of 1 question answered right and one of 3 answered wrong average 25%, not 50%."""
    for subject, rows in (("one", HAND_ROWS[:1]), ("three", HAND_ROWS[1:4])):
        (tmp_path / "mix" / "test").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mix" / "test" / f"{subject}_test.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    subjects, mapping, split = load_task(str(tmp_path), "mix_test")
    template = get_template("qwen3_nothink", tokenizer)

    def right_on_one(prompts):
        text = tokenizer.decode(prompts[0])
        out = torch.zeros(len(prompts), 4)
        out[:, 1 if "95 cm" in text else 3] = 1.0  # `one` is answered B (right), `three` D (all wrong)
        return out

    result = evaluate_task(subjects, mapping, split, tokenizer, template, right_on_one, n_shot=0, lang="en")
    assert result["subjects"] == {"one": 100.0, "three": 0.0}
    assert result["average"] == 25.0


def test_a_one_letter_model_scores_that_letters_share_below_chance(tokenizer):
    """Why the demo scored below 25%: the demo answers are A 35, B 23, C 27, D 35 of 120, so a model that
    always picks B scores 23/120 = 19.2%; results and the printed table show both letter counts."""
    subjects, mapping, split = load_task(str(DEMO), "size_advisor_test")
    template = get_template("qwen3_nothink", tokenizer)
    shares = {}
    for k, letter in enumerate(CHOICES):
        result = evaluate_task(subjects, mapping, split, tokenizer, template,
                               lambda p, k=k: torch.nn.functional.one_hot(torch.full((len(p),), k), 4).float(),
                               n_shot=0, lang="zh")
        shares[letter] = result["average"]
        assert result["predicted_letters"] == {c: 120 * (c == letter) for c in CHOICES}
    assert result["answer_letters"] == {"A": 35, "B": 23, "C": 27, "D": 35}
    assert shares == pytest.approx({"A": 100 * 35 / 120, "B": 100 * 23 / 120, "C": 100 * 27 / 120, "D": 100 * 35 / 120})
    table = format_results(result)
    assert "answer letters" in table and "A 35 (29.2%)  B 23 (19.2%)  C 27 (22.5%)  D 35 (29.2%)" in table
    assert "D 120 (100.0%)" in table


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


def test_eval_scores_base_and_tuned_in_one_run(base_model_dir, tmp_path):
    """`compare_models` (the syntax of `alignlab compare`): each model's picks equal its own in-process
    evaluation, one results.json holds both, and the printed table has a column per model."""
    import subprocess

    from tests.integration.test_export import make_adapter
    from tests.integration.test_train_sft import ALIGNLAB

    write_task(tmp_path, HAND_ROWS, [["示例 100 cm", "110", "100", "90", "80", "A"]])
    tuned = make_adapter(base_model_dir, tmp_path / "tuned").eval()
    with torch.no_grad():  # a stronger adapter, so that the tuned picks differ from the base's
        for name, param in tuned.named_parameters():
            if "lora_B" in name:
                param.mul_(4)
    tuned.save_pretrained(tmp_path / "tuned")
    run = subprocess.run([ALIGNLAB, "eval", f"model_name_or_path={base_model_dir}", "template=qwen3_nothink",
                          f"compare_models=base={base_model_dir}, tuned=+{tmp_path / 'tuned'}", "task=hand_test",
                          f"task_dir={tmp_path}", "n_shot=1", f"save_dir={tmp_path / 'out'}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["models"]) == ["base", "tuned"]
    assert results["models"]["tuned"]["adapters"] == [str(tmp_path / "tuned")]
    subjects, mapping, split = load_task(str(tmp_path), "hand_test")
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    template = get_template("qwen3_nothink", tokenizer)
    for name, model in (("base", tiny_model(seed=0).eval()), ("tuned", tuned)):
        expected = evaluate_task(subjects, mapping, split, tokenizer, template, logit_scorer(model, tokenizer, 4),
                                 n_shot=1, lang="en")
        assert results["models"][name]["answers"] == expected["answers"]
        assert results["models"][name]["average"] == pytest.approx(expected["average"])
    assert results["models"]["base"]["answers"] != results["models"]["tuned"]["answers"]
    header = next(line for line in run.stdout.splitlines() if line.startswith("subject"))
    assert header.split() == ["subject", "base", "tuned"]
    assert "base picked" in run.stdout and "tuned picked" in run.stdout
