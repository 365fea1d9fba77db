"""The studio loop on the demo task, end to end with a scripted annotator, as in docs/studio.md:

1. `alignlab data candidates` from the demo SFT model (saves/demo/sft, made by `make demo`): 4 answers per
   prompt of demo_rl at temperatures 0.7-1.3;
2. a scripted annotator ranks them through the studio's store (the Annotate page's path) by the demo's size
   rule: answers naming the prompt's correct size first, the rest tied after; items where every answer is
   equally right or wrong are skipped;
3. `alignlab data pairs` exports the rankings as a preference dataset registered in the output folder;
4. `alignlab train` stage rm on those pairs (val_size 0.2): the held-out accuracy against the 0.85 gate;
5. PPO (examples/demo/ppo.yaml) with that reward model, and `alignlab compare`: sampled size accuracy and reward of
   the SFT model and the PPO model on 200 held-out prompts (demo_prompts).

Run: .venv/bin/python scripts/studio_demo.py [--prompts 400] [--out saves/studio-demo]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from alignlab.eval.size_accuracy import extract_size
from alignlab.studio.project import Project, view

ROOT = Path(__file__).resolve().parent.parent


def alignlab(*args: str) -> None:
    print("$ alignlab " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "alignlab.cli", *args], check=True, cwd=ROOT)


def annotate(folder: Path) -> dict:
    """Rank every item by the size rule as annotator `scripted`; return how many were ranked and skipped."""
    project = Project(folder)
    counts = {"ranked": 0, "skipped": 0}
    try:
        for item in project.items:
            item_id = str(item["id"])
            shown = view(project, "scripted", item_id)  # records the display order, as the page does
            label = item["extra"].get("label")
            right = {c["id"]: extract_size(c["text"]) == label for c in shown["candidates"]}
            if len(set(right.values())) < 2:
                project.act("scripted", f"skip-{item_id}", item_id, "skip", {})
                counts["skipped"] += 1
                continue
            ranks = {cid: 1 if ok else 2 for cid, ok in right.items()}
            for cid, rank in ranks.items():
                project.act("scripted", f"rank-{item_id}-{cid}", item_id, "rank", {"candidate": cid, "rank": rank})
            project.act("scripted", f"submit-{item_id}", item_id, "submit", {"ranks": ranks})
            counts["ranked"] += 1
    finally:
        project.close()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--out", default="saves/studio-demo")
    args = parser.parse_args()
    out = ROOT / args.out
    if not (ROOT / "saves/demo/sft/run_config.yaml").is_file():
        print("studio_demo: needs the demo SFT model: run `make demo` first", file=sys.stderr)
        return 1
    alignlab("data", "candidates", "model_name_or_path=saves/demo/sft", "dataset=demo_rl", "dataset_dir=data",
             f"max_samples={args.prompts}", "num_candidates=4", "candidate_temperatures=0.7,1.0,1.3,1.0",
             "max_new_tokens=64", "top_p=1.0", "top_k=0", "infer_max_batch=64", f"output_dir={out}/project",
             "guideline=Rank answers that name the correct size (height + about 3-8 cm, rounded up to the size "
             "grid) first; equally right or wrong answers tie.")
    counts = annotate(out / "project")
    print(f"studio_demo: scripted annotator: {counts}", flush=True)
    alignlab("data", "pairs", f"studio_dir={out}/project", f"dataset_dir={out}", "register_as=studio_pairs",
             "pair_mode=best_vs_rest")
    alignlab("train", "examples/demo/rm.yaml", "dataset=studio_pairs", f"dataset_dir={out}", "val_size=0.2",
             "num_train_epochs=3", f"output_dir={out}/rm", "overwrite_output_dir=true")
    results = json.loads((out / "rm" / "all_results.json").read_text())
    print(f"studio_demo: reward model held-out accuracy {results.get('eval_accuracy')}, rm_ready "
          f"{results.get('rm_ready')}", flush=True)
    alignlab("train", "examples/demo/ppo.yaml", f"reward_model={out}/rm", f"output_dir={out}/ppo",
             "overwrite_output_dir=true")
    alignlab("compare", "examples/compare/demo.yaml", f"compare_models=sft=saves/demo/sft,studio_ppo={out}/ppo",
             f"reward_model={out}/rm", f"compare_dir={out}/compare", "max_samples=200")
    metrics = json.loads((out / "compare" / "results.json").read_text())["metrics"]
    for name, values in metrics.items():
        print(f"studio_demo: {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()
                                                   if isinstance(v, float) and "accuracy" in k or k == "reward"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
