"""Build the demo datasets (data/) and the tiny model's tokenizer and config (examples/models/tiny-qwen3/).

Deterministic: running it again reproduces every file byte for byte (a test checks this).

The scenario is a kids' clothing size advisor. The correct size is a rule of the height: the
smallest of 80/90/100/110/120/130 that is at least height + 3 cm. Answers come in four styles:
good (names the correct size, one reason, one safety note), vague (no size), wrong (good format,
wrong size) and verbose (long, no concrete size).

Usage: python scripts/build_demo_assets.py [--out ROOT]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SIZES = (80, 90, 100, 110, 120, 130)
HEIGHTS = range(66, 128)  # every size is reachable; 127 + 3 = 130
SEED = 20261122

ITEMS_ZH = ("连体衣", "睡衣", "外套", "卫衣", "羽绒服", "裤子", "T恤", "背心")
ITEMS_EN = ("romper", "pajamas", "coat", "hoodie", "down jacket", "trousers", "T-shirt", "vest")
SEASONS_ZH = ("春天", "夏天", "秋天", "冬天")
SEASONS_EN = ("spring", "summer", "autumn", "winter")

PROMPTS_ZH = (
    "宝宝{age}，身高{h}厘米，体重{w}公斤，{season}穿的{item}买多大码？",
    "孩子身高{h}cm，{w}kg，想买一件{item}，应该选哪个尺码？",
    "{season}到了，给{age}的孩子买{item}，身高{h}厘米，穿什么码合适？",
    "我家娃{age}，{h}cm，体重{w}公斤，{item}选几码？",
    "请推荐{item}的尺码：身高{h}厘米，体重{w}公斤，{season}穿。",
    "身高{h}cm的宝宝，{item}要买多大的？",
)
PROMPTS_EN = (
    "My child is {age}, {h} cm tall and {w} kg. Which size {item} should I buy for {season}?",
    "What size {item} fits a kid who is {h} cm tall?",
    "Please recommend a {item} size: height {h} cm, weight {w} kg, for {season}.",
)
SAFETY_ZH = (
    "注意避免带帽绳和小装饰的款式，防止勒颈或误吞",
    "注意选择纯棉透气面料，避免皮肤过敏",
    "注意洗涤后再穿，去除残留的化学物质",
    "注意领口和袖口不要过紧，保证活动舒适",
)
SAFETY_EN = (
    "avoid drawstrings and small decorations that can choke or strangle",
    "choose breathable cotton to avoid skin irritation",
    "wash it once before wearing to remove residues",
    "make sure the collar and cuffs are not tight",
)
VAGUE_ZH = (
    "买大一码总是对的，孩子长得快。",
    "尺码因品牌而异，建议买大一点的，总没错。",
    "小孩子长得快，随便买大一码就行。",
    "看着差不多就可以，大一点更耐穿。",
)
VAGUE_EN = (
    "Buying one size up is always right, kids grow fast.",
    "Sizes vary by brand, just get something a bit bigger.",
    "Kids grow quickly, so any bigger size will do.",
)
VERBOSE_ZH = (
    "选择童装尺码是一门学问。首先要考虑孩子的身高和体重，其次要考虑季节和衣服的款式，"
    "还要考虑不同品牌的版型差异。有的品牌偏大，有的品牌偏小，有的衣服需要宽松一些，"
    "有的衣服需要合身一些。另外孩子长得很快，所以很多家长喜欢买大一点的。总之，"
    "最好的办法是多比较、多试穿，根据实际情况综合判断，找到最适合孩子的尺码。"
)
VERBOSE_EN = (
    "Choosing a children's clothing size is an art. You should think about height and weight, "
    "then the season and the style of the garment, and also how each brand cuts its clothes. "
    "Some brands run large and some run small, and some clothes should be loose while others "
    "should fit. Children also grow quickly, so many parents buy bigger. In the end, compare, "
    "try things on and decide based on the situation to find the best fit."
)


def correct_size(height: int) -> int:
    """The smallest size that is at least height + 3 cm."""
    return next(s for s in SIZES if s >= height + 3)


def _age(height: int, zh: bool) -> str:
    months = max(3, int((height - 50) * 0.9))
    if months < 24:
        return f"{months}个月" if zh else f"{months} months old"
    return f"{months // 12}岁" if zh else f"{months // 12} years old"


def make_prompt(rng: random.Random, height: int, zh: bool) -> str:
    weight = round(height * 0.14 + rng.uniform(-1.5, 1.5), 1)
    i = rng.randrange(len(ITEMS_ZH))
    s = rng.randrange(4)
    template = rng.choice(PROMPTS_ZH if zh else PROMPTS_EN)
    return template.format(age=_age(height, zh), h=height, w=weight,
                           item=ITEMS_ZH[i] if zh else ITEMS_EN[i],
                           season=SEASONS_ZH[s] if zh else SEASONS_EN[s])


def good_answer(rng: random.Random, height: int, zh: bool, size: int | None = None) -> str:
    size = size or correct_size(height)
    if zh:
        return (f"建议选 {size} 码。身高 {height} cm，衣服要比身高多留 3 cm 左右的活动空间。"
                f"{rng.choice(SAFETY_ZH)}。")
    return (f"I recommend size {size}. At {height} cm the garment should leave about 3 cm of room "
            f"to move. Please {rng.choice(SAFETY_EN)}.")


def wrong_answer(rng: random.Random, height: int, zh: bool) -> str:
    right = correct_size(height)
    return good_answer(rng, height, zh, size=rng.choice([s for s in SIZES if s != right]))


def vague_answer(rng: random.Random, zh: bool) -> str:
    return rng.choice(VAGUE_ZH if zh else VAGUE_EN)


def verbose_answer(zh: bool) -> str:
    return VERBOSE_ZH if zh else VERBOSE_EN


def bad_answer(rng: random.Random, height: int, zh: bool) -> str:
    kind = rng.choice(("vague", "wrong", "verbose"))
    if kind == "vague":
        return vague_answer(rng, zh)
    return wrong_answer(rng, height, zh) if kind == "wrong" else verbose_answer(zh)


def write_json(path: Path, rows: list[dict]) -> None:
    """A JSON array with one row per line: diff-friendly and reproducible."""
    body = ",\n".join(json.dumps(r, ensure_ascii=False, sort_keys=False) for r in rows)
    path.write_text("[\n" + body + "\n]\n", encoding="utf-8")


def write_mcq(folder: Path, files: dict[str, list[list[str]]]) -> None:
    import csv
    import io

    for name, rows in files.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["question", "A", "B", "C", "D", "answer"])
        writer.writerows(rows)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(buffer.getvalue(), encoding="utf-8")
    mapping = {"size_zh": {"name": "儿童尺码", "category": "Chinese"},
               "size_en": {"name": "kids' clothing sizes", "category": "English"}}
    (folder / "mapping.json").write_text(json.dumps(mapping, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def build_data(out: Path) -> list[str]:
    rng = random.Random(SEED)
    # held-out prompts first; no training prompt may equal one of them
    heldout, seen = [], set()
    while len(heldout) < 240:
        h, zh = rng.choice(HEIGHTS), rng.random() < 0.8
        p = make_prompt(rng, h, zh)
        if p not in seen:
            seen.add(p)
            heldout.append({"instruction": p, "input": "", "output": good_answer(rng, h, zh),
                            "label": str(correct_size(h))})

    def fresh_prompt() -> tuple[str, int, bool]:
        while True:
            h, zh = rng.choice(HEIGHTS), rng.random() < 0.8
            p = make_prompt(rng, h, zh)
            if p not in seen:
                return p, h, zh

    sft = []
    for _ in range(4000):
        p, h, zh = fresh_prompt()
        r = rng.random()
        out_text = (good_answer(rng, h, zh) if r < 0.35 else
                    vague_answer(rng, zh) if r < 0.80 else wrong_answer(rng, h, zh))
        sft.append({"instruction": p, "input": "", "output": out_text})

    pref, pref_sharegpt = [], []
    for _ in range(2000):
        p, h, zh = fresh_prompt()
        chosen, rejected = good_answer(rng, h, zh), bad_answer(rng, h, zh)
        pref.append({"instruction": p, "input": "", "chosen": chosen, "rejected": rejected})
        pref_sharegpt.append({
            "conversations": [{"from": "human", "value": p}],
            "chosen": {"from": "gpt", "value": chosen},
            "rejected": {"from": "gpt", "value": rejected},
        })

    kto = []
    for i in range(1000):
        p, h, zh = fresh_prompt()
        desirable = i % 2 == 0
        kto.append({"instruction": p, "input": "",
                    "output": good_answer(rng, h, zh) if desirable else bad_answer(rng, h, zh),
                    "kto_tag": desirable})

    pt_lines = []
    for _ in range(1000):
        h, zh = rng.choice(HEIGHTS), rng.random() < 0.8
        size = correct_size(h)
        pt_lines.append(f"身高 {h} cm 的孩子穿 {size} 码，{rng.choice(SAFETY_ZH)}。" if zh else
                        f"A child {h} cm tall wears size {size}; {rng.choice(SAFETY_EN)}.")

    # prompts with labels for online RL (ppo/grpo); drawn last so the files above stay unchanged
    rl = []
    for _ in range(1000):
        p, h, zh = fresh_prompt()
        rl.append({"instruction": p, "input": "", "label": str(correct_size(h))})

    # a multiple-choice task in the MMLU/C-Eval file layout for `alignlab eval`; drawn after demo_rl
    mcq = {}
    for subject, zh in (("size_zh", True), ("size_en", False)):
        for split, count in (("dev", 5), ("test", 60)):
            rows = []
            for _ in range(count):
                h = rng.choice(HEIGHTS)
                p = make_prompt(rng, h, zh)
                options = [correct_size(h)] + rng.sample([s for s in SIZES if s != correct_size(h)], 3)
                rng.shuffle(options)
                rows.append([p, *(str(o) for o in options), "ABCD"[options.index(correct_size(h))]])
            mcq[f"{split}/{subject}_{split}.csv"] = rows

    out.mkdir(parents=True, exist_ok=True)
    write_mcq(out / "eval" / "size_advisor", mcq)
    write_json(out / "demo_rl.json", rl)
    write_json(out / "demo_sft.json", sft)
    write_json(out / "demo_pref.json", pref)
    write_json(out / "demo_pref_sharegpt.json", pref_sharegpt)
    write_json(out / "demo_kto.json", kto)
    write_json(out / "demo_prompts.json", heldout)
    (out / "demo_pt.txt").write_text("\n".join(pt_lines) + "\n", encoding="utf-8")
    info = {
        "demo_sft": {"file_name": "demo_sft.json"},
        "demo_pref": {"file_name": "demo_pref.json", "ranking": True,
                      "columns": {"prompt": "instruction", "query": "input",
                                  "chosen": "chosen", "rejected": "rejected"}},
        "demo_pref_sharegpt": {"file_name": "demo_pref_sharegpt.json", "ranking": True,
                               "formatting": "sharegpt",
                               "columns": {"messages": "conversations", "chosen": "chosen",
                                           "rejected": "rejected"}},
        "demo_kto": {"file_name": "demo_kto.json",
                     "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                 "kto_tag": "kto_tag"}},
        "demo_prompts": {"file_name": "demo_prompts.json"},
        "demo_rl": {"file_name": "demo_rl.json"},
        "demo_pt": {"file_name": "demo_pt.txt", "columns": {"prompt": "text"}},
    }
    (out / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
    corpus = [r["instruction"] + "\n" + r["output"] for r in sft + heldout + kto]
    corpus += [r["instruction"] + "\n" + r["chosen"] + "\n" + r["rejected"] for r in pref]
    return corpus + pt_lines


SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ADDED_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
                "</tool_response>")
# Qwen2/Qwen3 pre-tokenisation: digits one by one, letters grouped, punctuation runs.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
VOCAB_SIZE = 3072
GENERIC_TEXT = (
    "The quick brown fox jumps over the lazy dog. You are a helpful assistant. "
    "Hello! How can I help you today? Please answer the question. 你好，我是一个乐于助人的助手。"
    "system user assistant tool function name arguments parameters description required "
    "type object string number integer boolean array properties Action Input\n"
    "system\nuser\nassistant\ntool\n"
)


def build_tokenizer(out: Path, corpus: list[str], chat_template: str) -> int:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(ADDED_TOKENS), special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus + [GENERIC_TEXT] * 200, trainer=trainer)
    tok.add_tokens(list(ADDED_TOKENS))
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "add_prefix_space": False,
        "errors": "replace",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return tok.get_vocab_size()


def build_model_config(out: Path, vocab_size: int) -> None:
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": -(-vocab_size // 64) * 64,  # padded like Qwen's embeddings
        "hidden_size": 192,
        "intermediate_size": 640,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=root, help="project root to write into")
    args = parser.parse_args()
    corpus = build_data(args.out / "data")
    template = (root / "scripts" / "qwen3_chat_template.jinja").read_text(encoding="utf-8")
    model_dir = args.out / "examples" / "models" / "tiny-qwen3"
    vocab_size = build_tokenizer(model_dir, corpus, template)
    build_model_config(model_dir, vocab_size)
    print(f"wrote data/ and {model_dir} (vocab {vocab_size})")


if __name__ == "__main__":
    main()
