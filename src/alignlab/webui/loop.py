"""The studio loop behind the Loop tab: one folder `<runs root>/studio/<name>/`, the ordinary `alignlab`
commands each step runs there, and each step's state read back from disk (a restarted UI or a reloaded
page shows what is there; a stopped step starts again where it stopped).

    candidates.jsonl, guideline.md       `alignlab data candidates` (the studio project the Annotate tab opens)
    annotations.sqlite                   the Annotate tab's store
    prompts.json, pairs.json             the project's prompts and its exported pairs, both registered in
    dataset_info.json                    this folder's dataset_info.json (as <name>_prompts, <name>_pairs)
    steps/candidates/, steps/export/     step.yaml, and the job runner's webui_job.json and webui_train.log
    rm-1/, ppo-1/ or dpo-1/, ...         training runs (webui_config.yaml, like the Train tab's runs)
    compare-1/, ...                      annotated.yaml and held_out.yaml, each `alignlab compare`'s report
    loop.json                            every run in order; each rm run with the items annotated when it began

Plain Python over files; nothing here trains or loads a model.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ConfigError, FinetuningArguments, load_config
from ..datagen.register import file_name_in, register_datasets
from ..datagen.runner import read_records
from ..files import write_atomic
from ..studio.candidates import CANDIDATES
from ..studio.gate import Gate, rm_gate
from ..studio.project import REPORT, Project
from . import runs
from .eval_jobs import job_status
from .jobs import CONFIG_FILE, read_job, train_command

LOOP_FILE = "loop.json"
STEP_FILE = "step.yaml"
PROMPTS = "prompts.json"
JOB_STEPS = ("candidates", "export")  # jobs in steps/<name>/; the rest are numbered folders
POLICIES = ("ppo", "dpo")
COMPARE_SETS = ("annotated", "held_out")
MODEL_KEYS = ("model_name_or_path", "adapter_name_or_path", "finetuning_type", "template", "enable_thinking")

# The recommended settings each step starts from (the demo's, examples/demo/*.yaml), shown as YAML the
# user may edit before Start. The loop sets the keys that tie a run to it (LOOP_OWNED) at Start.
STEP_KEYS = {
    "candidates": {"num_candidates": 3, "candidate_temperatures": "0.7,1.0,1.3", "max_new_tokens": 64,
                   "top_p": 1.0, "top_k": 0},
    "export": {"pair_mode": "best_vs_rest", "annotator_mode": "majority"},
    "rm": {"stage": "rm", "do_train": True, "finetuning_type": "lora", "lora_target": "all", "lora_rank": 16,
           "cutoff_len": 256, "val_size": 0.2, "do_eval": True, "eval_strategy": "epoch", "rm_min_accuracy": 0.85,
           "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32, "learning_rate": 1.0e-3,
           "num_train_epochs": 3, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "logging_steps": 1,
           "save_steps": 500, "report_to": "none", "seed": 42, "disable_gradient_checkpointing": True},
    "ppo": {"stage": "ppo", "do_train": True, "finetuning_type": "lora", "lora_target": "all", "lora_rank": 16,
            "reward_model_type": "lora", "ppo_cliprange": 0.2, "ppo_kl_coef": 0.2, "ppo_target": 3.0,
            "ppo_score_norm": True, "ppo_epochs": 2, "ppo_buffer_size": 2, "cutoff_len": 256, "max_new_tokens": 64,
            "temperature": 1.0, "top_p": 1.0, "top_k": 0, "per_device_train_batch_size": 16, "learning_rate": 3.0e-4,
            "max_steps": 40, "lr_scheduler_type": "constant", "logging_steps": 1, "save_steps": 20,
            "report_to": "none", "seed": 42, "disable_gradient_checkpointing": True},
    "dpo": {"stage": "dpo", "do_train": True, "finetuning_type": "lora", "lora_target": "all", "lora_rank": 16,
            "pref_beta": 0.1, "pref_loss": "sigmoid", "pref_ftx": 0.5, "cutoff_len": 256,
            "per_device_train_batch_size": 16, "learning_rate": 7.0e-4, "num_train_epochs": 3,
            "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "logging_steps": 1, "save_steps": 500,
            "report_to": "none", "seed": 42, "disable_gradient_checkpointing": True},
    "compare": {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 96},
}
LOOP_OWNED = {"rm": ("stage", "output_dir", "dataset", "dataset_dir"),
              "ppo": ("stage", "output_dir", "reward_model", "rm_gate_override"),
              "dpo": ("stage", "output_dir", "dataset", "dataset_dir")}
NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


def loop_folder(root: str | Path, name: str) -> Path:
    """The folder of loop `name` under the runs root; a name that is no folder name is refused."""
    name = (name or "").strip()
    if not NAME.fullmatch(name):
        raise ConfigError(f"loop name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, e.g. kids-sizes).")
    return Path(root) / "studio" / name


def find_loops(root: str | Path) -> list[str]:
    """The loops under the runs root (folders of `studio/`), newest first."""
    folder = Path(root) / "studio"
    found = [p for p in folder.iterdir() if p.is_dir() and NAME.fullmatch(p.name)] if folder.is_dir() else []
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def read_loop(folder: str | Path) -> dict:
    try:
        data = json.loads((Path(folder) / LOOP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return {"runs": [], **data} if isinstance(data, dict) else {"runs": []}


def record(folder: str | Path, entry: dict) -> None:
    """Add a run to loop.json (a resumed run keeps its first entry), written atomically."""
    data = read_loop(folder)
    if not any(r.get("folder") == entry["folder"] for r in data["runs"]):
        data["runs"].append(entry)
        write_atomic(Path(folder) / LOOP_FILE, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def pairs_name(folder: Path) -> str:
    return f"{Path(folder).name}_pairs"


def prompts_name(folder: Path) -> str:
    return f"{Path(folder).name}_prompts"


def job_folder(folder: Path, step: str) -> Path:
    return Path(folder) / "steps" / step


def run_folders(folder: Path, step: str) -> list[Path]:
    """`<step>-N` folders of the loop, by N."""
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in Path(folder).glob(f"{step}-*")
             if p.is_dir() and re.fullmatch(rf"{step}-\d+", p.name)]
    return [p for _, p in sorted(found)]


def next_run_folder(folder: Path, step: str) -> Path:
    """Where the next run of `step` goes: the latest one again when it stopped or failed after a checkpoint
    (it resumes there), else `<step>-<N+1>`."""
    done = run_folders(folder, step)
    if done and (done[-1] / CONFIG_FILE).is_file() and runs.checkpoints(done[-1]) \
            and runs.run_status(done[-1]) in ("stopped", "failed"):  # a training run (compare-N has no config)
        return done[-1]
    return Path(folder) / f"{step}-{int(done[-1].name.rsplit('-', 1)[1]) + 1 if done else 1}"


def base_model(folder: Path) -> dict:
    """The model keys of the candidates step: the model the loop starts from and compares against."""
    try:
        config = yaml.safe_load((job_folder(folder, "candidates") / STEP_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    return {k: config[k] for k in MODEL_KEYS if config.get(k) not in (None, "")}


def finished_runs(folder: Path, step: str) -> list[Path]:
    return [p for p in run_folders(folder, step) if runs.run_status(p) == "finished"]


def latest_policy(folder: Path) -> Path | None:
    """The newest finished ppo or dpo run."""
    done = [p for step in POLICIES for p in finished_runs(folder, step)]
    return max(done, key=started_at, default=None)


def started_at(run: Path) -> float:
    """When the run's job began (0 for a folder no job ran in)."""
    job = read_job(run)
    return job.start_time if job else 0.0


def gate_history(folder: Path) -> list[tuple[int, float]]:
    """(items annotated when the run began, held-out accuracy) of the finished rm runs, in order."""
    items = {r["folder"]: r.get("items") for r in read_loop(folder)["runs"] if r.get("step") == "rm"}
    history = []
    for run in finished_runs(folder, "rm"):
        accuracy = runs.run_results(run).get("eval_accuracy")
        if isinstance(items.get(run.name), int) and isinstance(accuracy, int | float):
            history.append((items[run.name], float(accuracy)))
    return history


def gate(folder: Path) -> tuple[Path, Gate] | None:
    """The verdict on the newest finished rm run, against the rm_min_accuracy it was trained with."""
    done = finished_runs(folder, "rm")
    if not done:
        return None
    try:
        bar = float((yaml.safe_load((done[-1] / CONFIG_FILE).read_text()) or {}).get(
            "rm_min_accuracy", FinetuningArguments.rm_min_accuracy))
    except (OSError, yaml.YAMLError, TypeError, ValueError):
        bar = FinetuningArguments.rm_min_accuracy
    return done[-1], rm_gate(done[-1], bar, gate_history(folder))


def annotated_items(folder: Path) -> int:
    """Items with a submitted ranking in the latest export (studio_report.json)."""
    try:
        return int(json.loads((Path(folder) / REPORT).read_text(encoding="utf-8"))["counts"]["submitted"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def write_prompts(folder: Path) -> None:
    """The project's prompts (with the columns they came with, e.g. a label) as an alpaca dataset registered as
    `<name>_prompts`: PPO rolls out on them and the comparison answers them."""
    rows = []
    for item in read_records(Path(folder) / CANDIDATES):
        prompt = item.get("prompt", {})
        rows.append({**item.get("extra", {}), "instruction": prompt.get("instruction", ""),
                     "input": prompt.get("input", ""), "output": "", "system": prompt.get("system", ""),
                     "history": prompt.get("history", [])})
    path = write_atomic(Path(folder) / PROMPTS, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    register_datasets(str(folder), {prompts_name(folder): {"file_name": file_name_in(str(folder), path)}})


def _dump(values: dict) -> str:
    return yaml.safe_dump(values, allow_unicode=True, sort_keys=False, width=1000)


def parse_yaml(text: str, step: str) -> dict:
    """The keys of a step's YAML box; a broken or non-mapping text is one line naming the step."""
    try:
        values = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"the {step} YAML does not parse: {str(e).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"the {step} YAML is not a mapping of keys (key: value per line).")
    return values


def owned_keys(folder: Path, step: str, override: bool = False) -> dict:
    """The keys the loop sets for a training step, whatever its YAML says: where the run goes, which data
    and which reward model it uses, and the gate override."""
    keys = {"stage": step, "output_dir": str(next_run_folder(folder, step))}
    if step in ("rm", "dpo"):
        keys.update(dataset=pairs_name(folder), dataset_dir=str(folder))
    if step == "ppo":
        rm = finished_runs(folder, "rm")
        keys.update(reward_model=str(rm[-1]) if rm else None, rm_gate_override=True if override else None)
    return keys


def train_values(folder: Path, step: str, override: bool = False) -> dict:
    """The settings a training step's YAML box starts with: the demo's, or the step's last run's (so edits
    carry over to the next run), with the loop's own keys for the next run."""
    done = run_folders(folder, step)
    try:
        last = yaml.safe_load((done[-1] / CONFIG_FILE).read_text(encoding="utf-8")) if done else None
    except (OSError, yaml.YAMLError):
        last = None
    if isinstance(last, dict):  # the keys as the last run wrote them (its YAML, parsed and checked)
        values = {k: v for k, v in last.items() if k not in LOOP_OWNED[step]}
    else:
        values = {**base_model(folder), **STEP_KEYS[step]}
        if step == "ppo":
            values.update(dataset=prompts_name(folder), dataset_dir=str(folder))
    values.update(owned_keys(folder, step, override))
    return {k: v for k, v in values.items() if v is not None}


def train_yaml(folder: Path, step: str, override: bool = False) -> str:
    return _dump(train_values(folder, step, override))


def check_policy_allowed(folder: Path, override: bool) -> None:
    """PPO needs a reward model that passed the gate, or the override."""
    verdict = gate(folder)
    if verdict is None:
        raise ConfigError("PPO needs a reward model: train one in step 4 first.")
    if not verdict[1].passed and not override:
        raise ConfigError(f"{verdict[1].message} Or tick the override to use {verdict[0].name} anyway.")


@dataclass
class Prepared:
    """A step ready to start: the job folder, the command it runs and the YAML it wrote."""

    folder: Path
    command: list[str]
    text: str


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "alignlab.cli", *args]


def prepare_candidates(folder: Path, model: dict, settings: dict) -> Prepared:
    """steps/candidates/step.yaml from the top bar's model and the step's settings."""
    values = {**model, **{k: v for k, v in settings.items() if v not in (None, "", [])}, "output_dir": str(folder)}
    if not values.get("model_name_or_path"):
        raise ConfigError("pick the model whose answers people will rank in the top bar first.")
    if not values.get("dataset"):
        raise ConfigError("pick or upload the prompts first.")
    text = load_config([], defaults=values).to_yaml()
    return _write_job(folder, "candidates", text, _cli("data", "candidates"))


def prepare_more(folder: Path, more: int) -> Prepared | None:
    """Candidates for more prompts of the same dataset, so that `more` items beyond those done are open: the
    candidates step again with a larger max_samples (same settings: it continues after its last row).
    None when that many items are open already."""
    project = Project(folder)
    try:
        done, total = max(project.progress()["done"].values(), default=0), len(project.items)
    finally:
        project.close()
    if total - done >= more:
        return None
    values = yaml.safe_load(step_text(folder, "candidates")) or {}
    values["max_samples"] = done + more
    text = load_config([], defaults=values).to_yaml()
    return _write_job(folder, "candidates", text, _cli("data", "candidates"))


def prepare_export(folder: Path, settings: dict) -> Prepared:
    if not (Path(folder) / CANDIDATES).is_file():
        raise ConfigError("there are no candidates to export yet: run step 1 first.")
    values = {**STEP_KEYS["export"], **{k: v for k, v in settings.items() if v}, "studio_dir": str(folder),
              "dataset_dir": str(folder), "register_as": pairs_name(folder)}
    return _write_job(folder, "export", load_config([], defaults=values).to_yaml(), _cli("data", "pairs"))


def _write_job(folder: Path, step: str, text: str, verb: list[str]) -> Prepared:
    job = job_folder(folder, step)
    job.mkdir(parents=True, exist_ok=True)
    write_atomic(job / STEP_FILE, text)
    return Prepared(job, [*verb, str(job / STEP_FILE)], text)


def prepare_train(folder: Path, step: str, text: str, override: bool = False) -> Prepared:
    """The run folder and webui_config.yaml of a rm, ppo or dpo run from the YAML box (the loop's own keys
    set over it); checked by the CLI's parser before anything is written; recorded in loop.json."""
    if step == "ppo":
        check_policy_allowed(folder, override)
        if not (Path(folder) / PROMPTS).is_file():
            write_prompts(folder)
    if step in ("rm", "dpo") and not (Path(folder) / "pairs.json").is_file():
        raise ConfigError("there are no exported pairs yet: run step 3 (export) first.")
    values = {**parse_yaml(text, step), **owned_keys(folder, step, override)}
    values = {k: v for k, v in values.items() if v is not None}
    cfg_text = load_config([], with_training=True, defaults=values).to_yaml()
    run = Path(values["output_dir"])
    run.mkdir(parents=True, exist_ok=True)
    write_atomic(run / CONFIG_FILE, cfg_text)
    entry = {"step": step, "folder": run.name, "started": time.time()}
    if step == "rm":
        entry["items"] = annotated_items(folder)
    if step == "ppo":
        entry.update(reward_model=Path(values["reward_model"]).name, rm_gate_override=bool(override))
    record(folder, entry)
    return Prepared(run, train_command(run), cfg_text)


def compare_values(folder: Path, which: str, settings: dict, run: Path) -> dict:
    """One `alignlab compare` config of the before/after step: the loop's base model against its newest
    policy, scored by its newest reward model, on the annotated prompts or the held-out ones."""
    policy = latest_policy(folder)
    if policy is None:
        raise ConfigError("there is no finished PPO or DPO run to compare yet: run step 5 first.")
    base = base_model(folder)
    before = "+".join([base.get("model_name_or_path", ""), *filter(None, str(base.get("adapter_name_or_path") or
                                                                              "").split(","))])
    values = {**STEP_KEYS["compare"], "compare_models": f"before={before}, after={policy}",
              "compare_dir": str(run / which), "eval_metrics": settings.get("eval_metrics") or None}
    if base.get("template"):
        values["template"] = base["template"]
    if rm := finished_runs(folder, "rm"):
        values["reward_model"] = str(rm[-1])
    if which == "annotated":
        values.update(eval_dataset=prompts_name(folder), dataset_dir=str(folder),
                      max_samples=settings.get("annotated_samples") or 20)
    else:
        values.update(eval_dataset=settings.get("held_out"), dataset_dir=settings.get("held_out_dir"),
                      max_samples=settings.get("held_out_samples") or 30)
    return {k: v for k, v in values.items() if v not in (None, "")}


def prepare_compare(folder: Path, settings: dict) -> Prepared:
    """compare-N/ with annotated.yaml (and held_out.yaml when held-out prompts are picked), one job that
    runs `alignlab compare` on each in turn."""
    write_prompts(folder)
    run = next_run_folder(folder, "compare")
    sets = [s for s in COMPARE_SETS if s == "annotated" or settings.get("held_out")]
    texts = {s: load_config([], defaults=compare_values(folder, s, settings, run)).to_yaml() for s in sets}
    run.mkdir(parents=True, exist_ok=True)
    for which, text in texts.items():
        write_atomic(run / f"{which}.yaml", text)
    record(folder, {"step": "compare", "folder": run.name, "started": time.time(),
                    "policy": latest_policy(folder).name})
    script = " && ".join(shlex.join(_cli("compare", str(run / f"{s}.yaml"))) for s in sets)
    return Prepared(run, ["/bin/sh", "-c", script], compare_text(run))


def compare_text(run: Path | None) -> str:
    """The YAML files of a compare run, each under its name."""
    if run is None:
        return ""
    parts = [f"# {run.name}/{s}.yaml\n{(run / f'{s}.yaml').read_text(encoding='utf-8')}"
             for s in COMPARE_SETS if (run / f"{s}.yaml").is_file()]
    return "\n".join(parts)


# What the page shows of each step, read from the folder.

STEPS = ("candidates", "annotate", "export", "rm", "policy", "compare")


@dataclass
class StepState:
    """One row of the loop's overview: the step, its state (todo, running, finished, failed, stopped, or
    open for annotation still going on), the folder of its latest job and the numbers it says."""

    step: str
    state: str
    folder: Path | None
    numbers: dict


def _job_state(folder: Path | None, training: bool) -> str:
    if folder is None or read_job(folder) is None:
        return "todo"
    return runs.run_status(folder) if training else job_status(folder) or "todo"


def latest_job(folder: Path) -> Path | None:
    """The loop's most recently started job folder (a step, a run or a comparison)."""
    jobs = [(job.start_time, path.parent) for path in Path(folder).glob("*/**/webui_job.json")
            if (job := read_job(path.parent))] if Path(folder).is_dir() else []  # where it is now (moved or not)
    return max(jobs)[1] if jobs else None


def step_states(folder: Path) -> list[StepState]:
    folder = Path(folder)
    states = []
    candidates = job_folder(folder, "candidates")
    items = read_records(folder / CANDIDATES) if (folder / CANDIDATES).is_file() else []
    k = len(items[0]["candidates"]) if items else 0
    states.append(StepState("candidates", _job_state(candidates, False), candidates,
                            {"prompts": len(items), "k": k}))
    done: dict[str, int] = {}
    if items:
        project = Project(folder)
        try:
            done = project.progress()["done"]
        finally:
            project.close()
    best = max(done.values(), default=0)
    annotate = "todo" if not done else "finished" if items and best >= len(items) else "open"
    states.append(StepState("annotate", annotate, None, {"done": best, "total": len(items), "by": done}))
    try:
        counts = json.loads((folder / REPORT).read_text(encoding="utf-8"))["counts"]
    except (OSError, ValueError, KeyError):
        counts = {}
    export = job_folder(folder, "export")
    states.append(StepState("export", _job_state(export, False), export, counts))
    rm = run_folders(folder, "rm")
    verdict = gate(folder)
    states.append(StepState("rm", _job_state(rm[-1] if rm else None, True), rm[-1] if rm else None,
                            {"gate": verdict[1] if verdict else None, "gated_run": verdict[0].name if verdict else ""}))
    policies = [p for step in POLICIES for p in run_folders(folder, step) if read_job(p)]
    policy = max(policies, key=started_at, default=None)
    states.append(StepState("policy", _job_state(policy, True), policy, {}))
    compares = run_folders(folder, "compare")
    states.append(StepState("compare", _job_state(compares[-1] if compares else None, False),
                            compares[-1] if compares else None, {}))
    return states


def step_text(folder: Path, step: str) -> str:
    """The YAML a candidates or export step ran ("" before it ran)."""
    try:
        return (job_folder(folder, step) / STEP_FILE).read_text(encoding="utf-8")
    except OSError:
        return ""


def ran_text(run: Path | None) -> str:
    """The YAML a training run of the loop ran ("" when none)."""
    try:
        return (Path(run) / CONFIG_FILE).read_text(encoding="utf-8") if run else ""
    except OSError:
        return ""
