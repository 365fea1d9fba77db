"""The jobs of the Evaluate and Export tabs (predict, multiple-choice benchmark, compare, export): the
config each writes into its job folder, the `alignlab` command that runs it, its status and progress,
and what it wrote, as table rows.

A job folder is `<runs root>/<prefix>-<time>/` (prefixes in PREFIXES) holding `webui_task.yaml` (the
config the command reads), the job runner's `webui_job.json` and `webui_train.log`, and the job's
output: predict's generated_predictions.jsonl and predict_results.json, the benchmark's results.json,
compare's report.html, report.md and results.json, and (unless `export_dir` says otherwise) the
exported model in `model/`. Plain Python over files; nothing here trains or loads a model.
"""

from __future__ import annotations

import html
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import Config, ConfigError, load_config, split_list
from ..eval.predict import PREDICTIONS
from ..train.callbacks import hms
from .i18n import LANGUAGES, strings, translate
from .jobs import JOB_FILE, Job, JobRefused, JobRunner, read_job
from .runs import failure_line, log_tail

TASK_FILE = "webui_task.yaml"  # not the Train tab's webui_config.yaml: these folders are no training runs
PREFIXES = {"predict": "eval-predict", "benchmark": "eval-benchmark", "compare": "eval-compare", "export": "export"}
EVALUATE_KINDS = ("predict", "benchmark", "compare")
EXPORT_MODEL = "model"  # the export folder inside the job folder when `export_dir` is not given
PREDICT_KEYS = {"stage": "sft", "do_train": False, "do_predict": True, "predict_with_generate": True,
                "report_to": "none", "overwrite_output_dir": True}


def job_folder(root: str | Path, kind: str) -> Path:
    """A new job folder name for `kind` under the runs root (not created)."""
    base = Path(root) / f"{PREFIXES[kind]}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def kind_of(folder: str | Path) -> str | None:
    """The job kind a folder's name says (longest prefix first: eval-predict before a bare prefix)."""
    name = Path(folder).name
    return next((k for k, p in sorted(PREFIXES.items(), key=lambda kv: -len(kv[1]))
                 if re.fullmatch(re.escape(p) + r"-\d{8}-\d{6}(-\d+)?", name)), None)


def latest_job(root: str | Path, kinds: tuple[str, ...]) -> Path | None:
    """The most recently started job folder of one of `kinds` directly under the runs root."""
    root = Path(root)
    if not root.is_dir():
        return None
    jobs = [job for path in root.glob(f"*/{JOB_FILE}") if kind_of(path.parent) in kinds and (job := read_job(path.parent))]
    return Path(max(jobs, key=lambda j: j.start_time).run_dir) if jobs else None


def task_config(kind: str, top: dict, settings: dict, folder: str | Path) -> Config:
    """The config of a `kind` job in `folder`: the top bar's keys, the tab's settings (unset values
    dropped, lists joined) and the keys that make it that job; checked by the CLI's parser."""
    values = {**top, **{k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                        for k, v in settings.items() if v not in (None, "", [], ())}}
    folder = Path(folder)
    if kind == "predict":
        values.update(PREDICT_KEYS, output_dir=str(folder))
    elif kind == "benchmark":
        values["save_dir"] = str(folder)
    elif kind == "compare":
        values["compare_dir"] = str(folder)
    elif kind == "export":
        values.setdefault("export_dir", str(folder / EXPORT_MODEL))
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    return load_config([], with_training=kind == "predict", defaults=values)


def command(kind: str, folder: str | Path) -> list[str]:
    """The `alignlab` command line that runs the job in `folder`."""
    verb = {"predict": "train", "benchmark": "eval", "compare": "compare", "export": "export"}[kind]
    return [sys.executable, "-m", "alignlab.cli", verb, str(Path(folder) / TASK_FILE)]


def start(runner: JobRunner, root: str | Path, kind: str, top: dict, settings: dict) -> tuple[Job, str]:
    """Write the job's config into a new job folder and start it; (job, the YAML it runs).

    Raises ConfigError for settings the parser refuses (nothing written) and JobRefused while
    another job runs (on this device, whichever tab started it)."""
    running = runner.active()
    if running:
        raise JobRefused(f"{running.run_dir} is still running (pid {running.pid}): stop it first or wait.")
    folder = job_folder(root, kind)
    cfg = task_config(kind, top, settings, folder)
    if kind == "export":
        from ..export import check_export_dir
        from ..model.adapter import adapter_paths

        check_export_dir(Path(cfg.model.export_dir), [cfg.model.model_name_or_path, *adapter_paths(cfg.model)])
    text = cfg.to_yaml()
    folder.mkdir(parents=True)
    (folder / TASK_FILE).write_text(text, encoding="utf-8")
    try:
        return runner.start(folder, command(kind, folder)), text
    except JobRefused:
        if not read_job(folder):  # refused before it began: leave no empty job folder behind
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
        raise


def task_text(folder: str | Path) -> str:
    """The job's config file as written ("" if absent)."""
    try:
        return (Path(folder) / TASK_FILE).read_text(encoding="utf-8")
    except OSError:
        return ""


def task_settings(folder: str | Path) -> dict:
    """The keys of the job's config file ({} if unreadable)."""
    try:
        return yaml.safe_load((Path(folder) / TASK_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def job_status(folder: str | Path) -> str | None:
    """running / finished / failed / stopped from the job file; None before the job began.

    Unlike a training run (runs.run_status), success is the exit status alone: these jobs write no
    all_results.json."""
    job = read_job(folder)
    if job is None:
        return None
    if job.running:
        return "running"
    if job.stop_requested:
        return "stopped"
    return "finished" if job.exit_code == 0 else "failed"


# predict: "predicting: 5/12, ..."; benchmark: "size_en: 1/2 subjects, ..."; compare: "(1/2 models, ...)";
# data candidates: "candidates: 8/30 prompts, ..."
PROGRESS = re.compile(r"(?:predicting: (\d+)/(\d+)|: (\d+)/(\d+) subjects|\((\d+)/(\d+) models"
                      r"|candidates: (\d+)/(\d+) prompts)")


def job_progress(log: str) -> tuple[int, int] | None:
    """(done, total) from the last progress line the job printed."""
    for line in reversed(log.splitlines()):
        if match := PROGRESS.search(line):
            done, total = (int(g) for g in match.groups() if g is not None)
            return done, total
    return None


@dataclass
class JobView:
    """What a tab shows of one job: kind, status, progress, log tail, failure line, elapsed time."""

    folder: Path
    kind: str | None
    status: str | None
    progress: tuple[int, int] | None
    log: str
    failure: str | None  # the error line when the job failed
    exit_code: int | None
    elapsed: float

    @property
    def signature(self) -> tuple:
        """Changes whenever anything shown changes (the page redraws only then)."""
        return str(self.folder), self.status, self.log, int(self.elapsed) if self.status == "running" else None


def job_view(folder: str | Path) -> JobView:
    folder = Path(folder)
    job, log, status = read_job(folder), log_tail(folder), job_status(folder)
    elapsed = ((job.end_time or time.time()) - job.start_time) if job else 0.0
    return JobView(folder, kind_of(folder), status, job_progress(log), log,
                   failure_line(log) if status == "failed" else None, job.exit_code if job else None, elapsed)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


METRIC_NAMES = {"bleu-4": "BLEU-4", "rouge-1": "ROUGE-1", "rouge-2": "ROUGE-2", "rouge-l": "ROUGE-L",
                "exact_match": "exact match", "accuracy": "accuracy", "precision_macro": "precision (macro)",
                "recall_macro": "recall (macro)", "f1_macro": "F1 (macro)", "samples": "samples"}


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    return {k.removeprefix(prefix): v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def predict_metrics(folder: str | Path) -> list[list[str]]:
    """[metric, value] rows of predict_results.json (BLEU-4 and ROUGE x100, accuracy and F1 in 0-1)."""
    metrics = _read_json(Path(folder) / "predict_results.json") or {}
    return [[METRIC_NAMES.get(k, k), _number(v)] for k, v in _numbers(metrics, "predict_").items()]


def confusion_table(folder: str | Path) -> tuple[list[str], list[list]] | None:
    """(columns, rows) of the confusion matrix (`eval_metrics: classification`, or a metric such as
    size_metrics that reports one: the first): one row per label."""
    metrics = _read_json(Path(folder) / "predict_results.json") or {}
    matrix = next((v for k, v in metrics.items() if k.endswith("confusion_matrix") and isinstance(v, dict)), None)
    if matrix is None:
        return None
    return ["label", *matrix["columns"]], [[label, *row] for label, row in zip(matrix["labels"], matrix["matrix"])]


SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{1,40}\|>|</?s>|\[/?INST\]")
ROLE_LINE = re.compile(r"^(system|user|assistant)\s*$", re.MULTILINE)


def readable_prompt(prompt: str) -> str:
    """The prompt as a person reads it: the template's special tokens and bare role lines removed."""
    text = ROLE_LINE.sub("", SPECIAL_TOKEN.sub("\n", prompt))
    return re.sub(r"\n{2,}", "\n", text).strip()


def predictions(folder: str | Path, limit: int = 10) -> list[list[str]]:
    """[prompt, label, predict] of the first `limit` rows of generated_predictions.jsonl."""
    rows = []
    try:
        with open(Path(folder) / PREDICTIONS, encoding="utf-8") as f:
            for line in f:
                if len(rows) >= limit:
                    break
                try:
                    row = json.loads(line)
                except ValueError:  # a torn last line while the job writes
                    continue
                rows.append([readable_prompt(row.get("prompt", "")), row.get("label", ""), row.get("predict", "")])
    except OSError:
        pass
    return rows


def benchmark_accuracy(folder: str | Path) -> list[list[str]]:
    """[subject or category, accuracy %] rows of results.json, then the average over questions."""
    results = _read_json(Path(folder) / "results.json") or {}
    if "average" not in results:
        return []
    rows = [[s, f"{v:.2f}"] for s, v in results["subjects"].items()]
    rows += [[c, f"{v:.2f}"] for c, v in results.get("categories", {}).items()]
    return rows + [["average", f"{results['average']:.2f}"], ["questions", str(results["questions"])]]


def benchmark_letters(folder: str | Path) -> list[list]:
    """[which, A, B, C, D] rows: how often each letter is the answer and how often the model picked it
    (a model that has not learnt the format picks one letter and scores that letter's share)."""
    results = _read_json(Path(folder) / "results.json") or {}
    return [[name, *results[key].values()] for name, key in (("answers", "answer_letters"),
                                                              ("picked", "predicted_letters")) if key in results]


def compare_metrics(folder: str | Path) -> tuple[list[str], list[list[str]]]:
    """(["metric", model...], rows) of the numeric metrics in compare's results.json."""
    report = _read_json(Path(folder) / "results.json") or {}
    metrics = report.get("metrics") or {}
    names = list(metrics)
    keys = list(dict.fromkeys(k for m in metrics.values() for k in _numbers(m)))
    rows = [[METRIC_NAMES.get(k, k), *(_number(metrics[n][k]) if k in _numbers(metrics[n]) else "" for n in names)]
            for k in keys]
    return ["metric", *names], rows


def compare_report(folder: str | Path) -> Path | None:
    path = Path(folder) / "report.html"
    return path if path.is_file() else None


def compare_models(top: dict, others: list[str]) -> str:
    """`compare_models` for the top bar's model (first: the reference for a judge) and the picked
    models or run folders, each named by its folder (a repeated name gets -2, -3...)."""
    specs, used = [], set()
    adapters = split_list(top.get("adapter_name_or_path"))
    entries = [("+".join([top["model_name_or_path"], *adapters]), adapters[-1] if adapters else top["model_name_or_path"])]
    entries += [(path, path) for path in others if path]
    for spec, named_by in entries:
        if any(c in spec for c in ",="):
            raise ConfigError(f"compare: {spec!r} holds ',' or '=': rename the folder to compare it.")
        base = re.sub(r"[^\w.-]+", "_", Path(named_by).name) or "model"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        specs.append(f"{name}={spec}")
    return ", ".join(specs)


def export_dir_of(folder: str | Path) -> Path | None:
    value = task_settings(folder).get("export_dir")
    return Path(value) if value else None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def export_files(export_dir: str | Path | None) -> list[list[str]]:
    """[file, size] of every file the export wrote, by name."""
    if export_dir is None or not Path(export_dir).is_dir():
        return []
    files = sorted(p for p in Path(export_dir).rglob("*") if p.is_file())
    return [[str(p.relative_to(export_dir)), _size(p.stat().st_size)] for p in files]


def export_carried(export_dir: str | Path | None) -> list[list[str]]:
    """[setting, value] of what the export carries: the template (and whether chat_template.jinja was
    written), the model and adapters it came from, the dtype, from its run_config.yaml."""
    if export_dir is None or not (Path(export_dir) / "run_config.yaml").is_file():
        return []
    try:
        carried = yaml.safe_load((Path(export_dir) / "run_config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        carried = {}
    jinja = Path(export_dir) / "chat_template.jinja"
    rows = [["chat_template.jinja", "written" if jinja.is_file() else "missing"]]
    for key, value in carried.items():
        if value is not None:
            rows.append([key, ", ".join(map(str, value)) if isinstance(value, list) else str(value)])
    return rows


def benchmark_tasks(task_dir: str | Path) -> list[str]:
    """`<folder>_<split>` for every benchmark folder under `task_dir` with a split folder of CSV files."""
    found = []
    folder = Path(task_dir)
    for task in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        found += [f"{task.name}_{split}" for split in ("test", "val", "validation", "dev")
                  if any((task / split).glob("*.csv"))]
    return found


def status_text(view: JobView, code: str) -> str:
    """The job's status line: folder, kind, status, progress where the job prints it, elapsed time."""
    values = {"job": view.folder.name, "kind": translate(code, f"kind_{view.kind}"),
              "status": translate(code, f"status_{view.status}") if view.status else "…", "elapsed": hms(view.elapsed)}
    if view.progress and view.status == "running":
        return translate(code, "job_line_progress", done=view.progress[0], total=view.progress[1], **values)
    return translate(code, "job_line", **values)


def failure_html(view: JobView, code: str) -> str:
    """The failure panel: the exit status and the line that says why ("" unless the job failed)."""
    if view.failure is None:
        return ""
    return (f'<div role="alert" style="border:1px solid #d33;border-radius:6px;padding:8px 12px;'
            f'overflow-wrap:anywhere"><b>{html.escape(translate(code, "job_failed", code=view.exit_code))}</b>'
            f'<pre style="white-space:pre-wrap;margin:6px 0 0">{html.escape(view.failure)}</pre></div>')


def table_frame(code: str, columns: list[str], rows: list[list], named_rows: bool = False):
    """A table for the page, every cell as text: headers translated (`col_<name>` where one exists, else
    the name as it is: a model, a letter); with `named_rows` the first cells too (`row_<name>`)."""
    import pandas as pd

    known = strings(code if code in LANGUAGES else "en")
    if named_rows:
        rows = [[known.get(f"row_{r[0]}", r[0]), *r[1:]] for r in rows]
    return pd.DataFrame(rows, columns=[known.get(f"col_{c}", c) for c in columns]).astype(str)


# What the Evaluate and Export tabs do alike: start a job and say so, stop their own job, and find
# the view of their latest job when it changed since the last redraw.

def start_message(runner: JobRunner, root: str | Path, kind: str, top: dict, settings: dict, code: str) -> str:
    """Start a `kind` job and say so, or say in one line why it did not start."""
    try:
        job, _ = start(runner, root, kind, top, settings)
    except ConfigError as e:
        return translate(code, "bad_config", error=e)
    except JobRefused as e:
        return translate(code, "refused", reason=e)
    return translate(code, "job_started", job=Path(job.run_dir).name)


def stop_message(runner: JobRunner, kinds: tuple[str, ...], code: str) -> str:
    """Stop the running job if it is one of `kinds` (a tab stops only its own jobs)."""
    job = runner.active()
    if job is None or kind_of(job.run_dir) not in kinds:
        return translate(code, "job_not_here")
    runner.stop()
    return translate(code, "job_stopping", job=Path(job.run_dir).name)


def changed_view(root: str | Path, kinds: tuple[str, ...], code: str, last) -> tuple[Path, JobView, tuple] | None:
    """(folder, view, signature) of the latest `kinds` job, or None when there is none or nothing changed."""
    folder = latest_job(root, kinds)
    if folder is None:
        return None
    view = job_view(folder)
    signature = (code, *view.signature)
    return None if signature == last else (folder, view, signature)
