"""The Loop tab: the preference studio's steps on one page, candidates -> annotate -> export -> reward model
(curves, gate) -> PPO or DPO (reward curve) -> before/after, each an ordinary `alignlab` job whose YAML
the page shows, each step's state read from the loop's folder (webui/loop.py) on every refresh."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from ..config import ConfigError
from ..datagen.register import file_name_in, register_datasets
from ..studio.gate import pair_text
from ..train.callbacks import hms
from . import eval_jobs, forms, loop, runs
from .evaluate_tab import METRIC_CHOICES, report_frame
from .i18n import LANGUAGES, translate
from .jobs import JobRefused
from .page import Page, model_keys
from .train_tab import points_frame, progress_bar

REFRESH_S = 2.0
POLICY_CURVE = {"ppo": "reward", "dpo": "rewards/margins"}
UPLOAD_TYPES = (".txt", ".json", ".jsonl")


def state_text(code: str, state: loop.StepState) -> str:
    """The overview's words for one step's state and numbers."""
    n = state.numbers
    detail = ""
    if state.step == "candidates" and n["prompts"]:
        detail = translate(code, "loop_detail_candidates", prompts=n["prompts"], k=n["k"])
    elif state.step == "annotate" and n["total"]:
        people = ", ".join(f"{who} {count}" for who, count in sorted(n["by"].items()))
        detail = translate(code, "loop_detail_annotate", done=n["done"], total=n["total"], people=people or "–")
    elif state.step == "export" and n.get("pairs") is not None:
        detail = translate(code, "loop_detail_export", **n)
    elif state.step == "rm" and n.get("gate"):
        detail = gate_text(code, n["gate"], n["gated_run"])
    if state.folder is not None and state.step in ("rm", "policy", "compare") and not n.get("gate"):  # a gate names it
        detail = f"`{state.folder.name}` · {detail}" if detail else f"`{state.folder.name}`"
    return f"| {translate(code, f'loop_step_{state.step}')} | {translate(code, f'loop_state_{state.state}')} | {detail} |"


def overview(code: str, states: list[loop.StepState]) -> str:
    head = f"| {translate(code, 'loop_col_step')} | {translate(code, 'loop_col_state')} | " \
           f"{translate(code, 'loop_col_detail')} |\n|---|---|---|"
    return "\n".join([head, *(state_text(code, s) for s in states)])


def gate_text(code: str, verdict, run: str) -> str:
    if verdict.accuracy is None:
        return translate(code, "loop_gate_none", run=run)
    shown, bar = pair_text(verdict.accuracy, verdict.min_accuracy)
    if verdict.passed:
        return translate(code, "loop_gate_pass", run=run, accuracy=shown, bar=bar)
    return translate(code, "loop_gate_fail", run=run, accuracy=shown, bar=bar, more=verdict.more_items)


def job_line(code: str, folder: Path | None) -> tuple[str, float]:
    """The status line and progress (%) of the loop's latest job."""
    if folder is None:
        return translate(code, "loop_no_job"), 0.0
    if (folder / loop.CONFIG_FILE).is_file():  # a training run
        view = runs.live_view(folder)
        status = translate(code, f"status_{view.status}")
        if view.progress:
            p = view.progress
            return translate(code, "progress", run=folder.name, status=status, step=p.step, total=p.total,
                             percentage=p.percentage, elapsed=p.elapsed, remaining=p.remaining), \
                100.0 if view.status == "finished" else p.percentage
        return translate(code, "waiting", run=folder.name, status=status), 100.0 if view.status == "finished" else 0.0
    view = eval_jobs.job_view(folder)
    name = folder.name if folder.parent.name != "steps" else f"steps/{folder.name}"
    status = translate(code, f"status_{view.status}") if view.status else "…"
    done = 100.0 if view.status == "finished" else \
        view.progress[0] / max(view.progress[1], 1) * 100 if view.progress else 0.0
    extra = f" · {view.progress[0]}/{view.progress[1]}" if view.progress and view.status == "running" else ""
    return f"**{name}** · {status}{extra} · {hms(view.elapsed)}", done


def unedited(box: str | None, made: str | None) -> bool:
    """The YAML box still holds what the page put there (the editor may drop a final newline)."""
    return (box or "").strip() == (made or "").strip()


def plot(rows: list[dict], metric: str):
    """A curve of the run's log, shown once it has points (the title stays: Gradio 6.31 draws no lines after
    a title update)."""
    points = points_frame(runs.curve(rows, metric))
    return gr.update(value=points, visible=points is not None)


def curve_plot(title: str, elem_id: str) -> gr.LinePlot:
    """A run's curve (raw and EMA), hidden until it has points."""
    return gr.LinePlot(None, x="step", y="value", color="series", height=240, title=title, visible=False,
                       elem_id=elem_id)


def folded_yaml(said, elem_id: str, label: str, editable: bool = False) -> gr.Code:
    """A YAML view (editable or not) folded in an accordion `<elem_id>_box`."""
    with said(gr.Accordion("", open=False, elem_id=f"{elem_id}_box"), label):
        return gr.Code(language="yaml", interactive=editable, show_label=False, elem_id=elem_id)


def next_run(said, step: str, start_label: str, startable: bool = True) -> tuple:
    """A training step's controls: the next run's YAML (editable), Reset and Start, and the YAML its latest
    run ran; (yaml, reset, start, ran)."""
    box = folded_yaml(said, f"loop_{step}_yaml", "loop_next", editable=True)
    with gr.Row():
        reset = said(gr.Button("", size="sm", elem_id=f"loop_{step}_reset"), "loop_reset", "value")
        start = said(gr.Button("", variant="primary", interactive=startable, elem_id=f"loop_{step}_start"),
                     start_label, "value")
    return box, reset, start, folded_yaml(said, f"loop_{step}_ran", "loop_ran_run")


def build(page: Page, annotate_project: gr.Dropdown) -> None:
    root, top, said = page.root, page.top, page.said
    with said(gr.Tab(translate("en", "tab_loop"), id="loop"), "tab_loop") as tab:
        said(gr.Markdown(translate("en", "loop_intro")), "loop_intro", "value")
        with gr.Row(equal_height=True):
            name = said(gr.Dropdown(loop.find_loops(root), value=None, allow_custom_value=True, label="", scale=3,
                                    elem_id="loop_name"), "loop_name")
            refresh = said(gr.Button("", size="sm", scale=0, min_width=120, elem_id="loop_refresh"),
                           "ann_refresh", "value")
            stop = said(gr.Button("", variant="stop", scale=0, min_width=160, elem_id="loop_stop"), "stop", "value")
        message = gr.Markdown(elem_id="loop_message")
        table = gr.Markdown(elem_id="loop_overview")
        status = gr.Markdown(translate("en", "loop_no_job"), elem_id="loop_status")
        bar = gr.HTML(progress_bar(0), elem_id="loop_bar")

        with said(gr.Accordion("", open=True, elem_id="loop_candidates"), "loop_head_candidates"):
            with gr.Row(equal_height=True):
                c_dir = said(gr.Textbox(page.dataset_dir, label="", max_lines=1, scale=1, elem_id="loop_c_dir"),
                             "dataset_dir")
                c_dataset = said(gr.Dropdown(forms.datasets_for("ppo", page.dataset_dir), value=None, label="",
                                             allow_custom_value=True, scale=2, elem_id="loop_c_dataset"), "loop_c_dataset")
                c_upload = said(gr.File(file_types=list(UPLOAD_TYPES), type="filepath", label="", scale=2, height=150,
                                        elem_id="loop_c_upload"), "loop_c_upload")
            with gr.Row(equal_height=True):
                c_samples = said(gr.Number(100, precision=0, minimum=1, label="", elem_id="loop_c_samples"),
                                 "loop_c_samples")
                c_k = said(gr.Slider(2, 4, value=3, step=1, label="", elem_id="loop_c_k"), "loop_c_k")
                c_temps = said(gr.Textbox(loop.STEP_KEYS["candidates"]["candidate_temperatures"], label="", max_lines=1,
                                          elem_id="loop_c_temps"), "loop_c_temps")
                c_tokens = said(gr.Number(64, precision=0, minimum=1, label="", elem_id="loop_c_tokens"),
                                "eval_max_new_tokens")
            c_guideline = said(gr.Textbox(translate("en", "loop_default_guideline"), label="", lines=2,
                                          elem_id="loop_c_guideline"), "loop_c_guideline")
            c_start = said(gr.Button("", variant="primary", elem_id="loop_c_start"), "loop_start_candidates", "value")
            c_yaml = folded_yaml(said, "loop_c_yaml", "loop_ran")

        with said(gr.Accordion("", open=True, elem_id="loop_annotate"), "loop_head_annotate"):
            a_text = gr.Markdown(elem_id="loop_a_text")
            a_open = said(gr.Button("", elem_id="loop_a_open"), "loop_open_annotate", "value")

        with said(gr.Accordion("", open=True, elem_id="loop_export"), "loop_head_export"):
            with gr.Row():
                e_pairs = said(gr.Radio(["best_vs_rest", "adjacent", "all_pairs"], value="best_vs_rest", label="",
                                        elem_id="loop_e_pairs"), "loop_e_pairs")
                e_people = said(gr.Radio(["majority", "per_annotator"], value="majority", label="",
                                         elem_id="loop_e_people"), "loop_e_people")
            e_start = said(gr.Button("", variant="primary", elem_id="loop_e_start"), "loop_start_export", "value")
            e_yaml = folded_yaml(said, "loop_e_yaml", "loop_ran")

        with said(gr.Accordion("", open=True, elem_id="loop_rm"), "loop_head_rm"):
            r_gate = gr.Markdown(elem_id="loop_gate")
            r_more = gr.Button(visible=False, elem_id="loop_more")
            with gr.Row():
                r_loss = curve_plot("loss", "loop_rm_loss")
                r_acc = curve_plot("eval_accuracy", "loop_rm_accuracy")
            r_yaml, r_reset, r_start, r_ran = next_run(said, "r", "loop_start_rm")

        with said(gr.Accordion("", open=True, elem_id="loop_policy"), "loop_head_policy"):
            with gr.Row(equal_height=True):
                p_kind = said(gr.Radio(list(loop.POLICIES), value="ppo", label="", elem_id="loop_p_kind"), "loop_p_kind")
                p_override = said(gr.Checkbox(False, label="", elem_id="loop_p_override"), "loop_p_override")
            p_plot = curve_plot("reward (PPO) · rewards/margins (DPO)", "loop_policy_curve")
            p_yaml, p_reset, p_start, p_ran = next_run(said, "p", "loop_start_policy", startable=False)

        with said(gr.Accordion("", open=True, elem_id="loop_compare"), "loop_head_compare"):
            with gr.Row(equal_height=True):
                h_annotated = said(gr.Number(20, precision=0, minimum=1, label="", elem_id="loop_h_annotated"),
                                   "loop_h_annotated")
                h_dir = said(gr.Textbox(page.dataset_dir, label="", max_lines=1, elem_id="loop_h_dir"), "dataset_dir")
                h_dataset = said(gr.Dropdown(["", *forms.datasets_for("ppo", page.dataset_dir)], value="",
                                             allow_custom_value=True, label="", elem_id="loop_h_dataset"), "loop_h_dataset")
                h_samples = said(gr.Number(30, precision=0, minimum=1, label="", elem_id="loop_h_samples"),
                                 "loop_h_samples")
                h_metrics = said(gr.Dropdown(METRIC_CHOICES, value="", allow_custom_value=True, label="",
                                             elem_id="loop_h_metrics"), "eval_extra_metrics")
            h_start = said(gr.Button("", variant="primary", elem_id="loop_h_start"), "loop_start_compare", "value")
            h_which = said(gr.Radio([(translate("en", f"loop_set_{s}"), s) for s in loop.COMPARE_SETS], value="annotated",
                                    label="", elem_id="loop_h_which"), "loop_h_which")
            h_table = gr.Dataframe(visible=False, interactive=False, wrap=True, elem_id="loop_h_table")
            h_report = gr.HTML(visible=False, elem_id="loop_h_report")
            h_yaml = folded_yaml(said, "loop_h_yaml", "loop_ran")

        log_box = said(gr.Textbox(label="", lines=8, max_lines=8, autoscroll=True, interactive=False,
                                  elem_id="loop_log", elem_classes="log"), "log")
        remembered = gr.BrowserState("", storage_key="alignlab_webui_loop")  # the loop a reload comes back to
        r_made = gr.State("")  # the YAML last put in the rm / policy box: an unedited box follows the loop
        p_made = gr.State("")
        seen = gr.State(None)
        timer = gr.Timer(REFRESH_S)

    def folder_of(loop_name: str) -> Path:
        return loop.loop_folder(root, loop_name)

    def started(code: str, prepared: loop.Prepared) -> str:
        try:
            page.runner.start(prepared.folder, prepared.command)
        except JobRefused as e:
            return translate(code, "refused", reason=e)
        return translate(code, "loop_started", job=prepared.folder.name)

    def refuse_if_busy(code: str) -> str | None:
        running = page.runner.active()
        return translate(code, "refused", reason=f"{running.run_dir} is still running (pid {running.pid}): "
                                                 "stop it first or wait.") if running else None

    def on_candidates(code, loop_name, folder_in, dataset, upload, samples, k, temps, tokens, guideline, *top_values):
        try:
            if busy := refuse_if_busy(code):
                return busy, gr.skip()
            folder = folder_of(loop_name)
            settings = {"dataset": dataset, "dataset_dir": folder_in, "max_samples": samples, "num_candidates": k,
                        "candidate_temperatures": temps, "max_new_tokens": tokens, "guideline": guideline,
                        "top_p": 1.0, "top_k": 0}
            if upload:
                settings.update(uploaded(folder, Path(upload)))
            prepared = loop.prepare_candidates(folder, model_keys(*top_values), settings)
        except (ConfigError, OSError) as e:
            return translate(code, "bad_config", error=e), gr.skip()
        return started(code, prepared), prepared.text

    def uploaded(folder: Path, path: Path) -> dict:
        """An uploaded prompt file copied into the loop's folder: a .txt is read as is, a JSON file is
        registered there (alpaca or sharegpt, as the registry reads it)."""
        if path.suffix not in UPLOAD_TYPES:
            raise ConfigError(f"{path.name}: upload a .txt (one prompt per line), .json or .jsonl file.")
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / f"uploaded_prompts{path.suffix}"
        shutil.copyfile(path, copy)
        if path.suffix == ".txt":
            return {"dataset": str(copy)}
        name = f"{folder.name}_uploaded"
        register_datasets(str(folder), {name: {"file_name": file_name_in(str(folder), copy)}})
        return {"dataset": name, "dataset_dir": str(folder)}

    def on_export(code, loop_name, pair_mode, annotator_mode):
        try:
            if busy := refuse_if_busy(code):
                return busy, gr.skip()
            prepared = loop.prepare_export(folder_of(loop_name), {"pair_mode": pair_mode,
                                                                   "annotator_mode": annotator_mode})
        except ConfigError as e:
            return translate(code, "bad_config", error=e), gr.skip()
        return started(code, prepared), prepared.text

    def on_train(step, code, loop_name, text, override=False):
        """Start a rm, ppo or dpo run from its YAML box; the box then follows the loop again (the next run
        starts from this one's settings)."""
        try:
            if busy := refuse_if_busy(code):
                return busy, gr.skip(), gr.skip(), gr.skip()
            prepared = loop.prepare_train(folder_of(loop_name), step, text, bool(override))
        except ConfigError as e:
            return translate(code, "bad_config", error=e), gr.skip(), gr.skip(), gr.skip()
        return started(code, prepared), prepared.text, prepared.text, prepared.text

    def on_compare(code, loop_name, annotated, folder_in, held_out, samples, metrics):
        try:
            if busy := refuse_if_busy(code):
                return busy, gr.skip()
            prepared = loop.prepare_compare(folder_of(loop_name), {
                "annotated_samples": annotated, "held_out": held_out or None, "held_out_dir": folder_in,
                "held_out_samples": samples, "eval_metrics": metrics})
        except ConfigError as e:
            return translate(code, "bad_config", error=e), gr.skip()
        return started(code, prepared), prepared.text

    def on_stop(code: str, loop_name: str):
        job = page.runner.active()
        try:
            mine = job is not None and Path(job.run_dir).resolve().is_relative_to(folder_of(loop_name).resolve())
        except ConfigError:
            mine = False
        if not mine:
            return translate(code, "job_not_here")
        page.runner.stop()
        return translate(code, "job_stopping", job=Path(job.run_dir).name)

    def fresh_yaml(loop_name: str, kind: str, override: bool) -> tuple:
        """(rm YAML, policy YAML) the boxes start from."""
        try:
            folder = folder_of(loop_name)
        except ConfigError:
            return "", ""
        return loop.train_yaml(folder, "rm"), loop.train_yaml(folder, kind, bool(override))

    def on_reset_rm(loop_name):
        rm_text, _ = fresh_yaml(loop_name, "ppo", False)
        return rm_text, rm_text

    def on_reset_policy(loop_name, kind, override):
        _, policy_text = fresh_yaml(loop_name, kind, override)
        return policy_text, policy_text

    def policy_allowed(folder: Path, kind: str, override: bool, verdict) -> bool:
        """DPO needs the pairs; PPO a reward model that passed the gate (`verdict`), or the override."""
        if kind == "dpo":
            return (folder / "pairs.json").is_file()
        return verdict is not None and (verdict.passed or bool(override))

    def on_tick(code, loop_name, r_text, r_last, p_text, p_last, kind, override, which, last):
        try:
            folder = folder_of(loop_name)
        except ConfigError:
            return [gr.skip()] * (len(live) - 1) + [last]
        states = loop.step_states(folder)
        job = loop.latest_job(folder)
        line, percent = job_line(code, job)
        rm_text, policy_text = fresh_yaml(loop_name, kind, override)
        log = runs.log_tail(job) if job else ""
        signature = (code, loop_name, which, kind, bool(override), [(s.step, s.state, str(s.numbers)) for s in states],
                     line, len(log), rm_text, policy_text)
        if signature == last:
            return [gr.skip()] * (len(live) - 1) + [last]
        by_step = {s.step: s for s in states}
        rm_state, policy_state, compare_state = by_step["rm"], by_step["policy"], by_step["compare"]
        verdict = rm_state.numbers.get("gate")
        gate_line = gate_text(code, verdict, rm_state.numbers["gated_run"]) if verdict else \
            translate(code, "loop_gate_waiting")
        more = verdict is not None and not verdict.passed and verdict.more_items > 0
        rm_rows = runs.read_log(str(rm_state.folder)) if rm_state.folder else []
        policy_rows = runs.read_log(str(policy_state.folder)) if policy_state.folder else []
        policy_metric = POLICY_CURVE.get(policy_state.folder.name.split("-")[0], "loss") if policy_state.folder \
            else "reward"
        annotate = by_step["annotate"].numbers
        shown_set = which if compare_state.folder and (compare_state.folder / which).is_dir() else "annotated"
        results = compare_state.folder / shown_set if compare_state.folder else None
        columns, rows = eval_jobs.compare_metrics(results) if results else ([], [])
        report = eval_jobs.compare_report(results) if results else None
        return [
            overview(code, states), line, progress_bar(percent),
            loop.step_text(folder, "candidates"), loop.step_text(folder, "export"),
            translate(code, "loop_annotate_progress", done=annotate["done"], total=annotate["total"])
            if annotate["total"] else translate(code, "loop_annotate_waiting"),
            gate_line, gr.update(visible=more, value=translate(code, "loop_more", n=verdict.more_items) if more else ""),
            plot(rm_rows, "loss"), plot(rm_rows, "eval_accuracy"),
            rm_text if unedited(r_text, r_last) else gr.skip(), rm_text if unedited(r_text, r_last) else r_last,
            loop.ran_text(rm_state.folder),
            gr.update(interactive=policy_allowed(folder, kind, override, verdict)),
            plot(policy_rows, policy_metric),
            policy_text if unedited(p_text, p_last) else gr.skip(),
            policy_text if unedited(p_text, p_last) else p_last,
            loop.ran_text(policy_state.folder),
            gr.update(value=eval_jobs.table_frame(code, columns, rows), visible=True) if rows
            else gr.update(visible=False),
            gr.update(value=report_frame(report), visible=True) if report else gr.update(visible=False),
            loop.compare_text(compare_state.folder), log, signature]

    def on_name(loop_name: str):
        """A loop picked or named (or the one remembered by the browser): the boxes refilled, the view redrawn."""
        rm_text, policy_text = fresh_yaml(loop_name, "ppo", False)
        return (gr.update(value=loop_name or None, choices=loop.find_loops(root)), rm_text, rm_text, policy_text,
                policy_text, None, loop_name or "")

    def on_open(loop_name: str):
        """To the Annotate tab on the loop's project (the items still open come first there)."""
        try:
            return gr.Tabs(selected="annotate"), str(folder_of(loop_name))
        except ConfigError:
            return gr.skip(), gr.skip()

    def on_more(code: str, loop_name: str):
        """The gate's "annotate N more": candidates for more prompts when too few items are open, then the
        Annotate tab (the new items appear there as they are written)."""
        said = gr.skip()
        try:
            folder = folder_of(loop_name)
            verdict = loop.gate(folder)
            prepared = loop.prepare_more(folder, verdict[1].more_items) if verdict else None
            if prepared is not None:
                said = refuse_if_busy(code) or started(code, prepared)
        except (ConfigError, OSError) as e:
            said = translate(code, "bad_config", error=e)
        return (*on_open(loop_name), said)

    lang = page.lang
    live = [table, status, bar, c_yaml, e_yaml, a_text, r_gate, r_more, r_loss, r_acc, r_yaml, r_made, r_ran,
            p_start, p_plot, p_yaml, p_made, p_ran, h_table, h_report, h_yaml, log_box, seen]
    named = [name, r_yaml, r_made, p_yaml, p_made, seen, remembered]
    name.change(on_name, name, named)
    def on_restore(saved: str, current: str | None):
        """The browser's remembered loop, once it has read it back, unless one is picked already."""
        return on_name(saved) if saved and not current else [gr.skip()] * len(named)

    remembered.change(on_restore, [remembered, name], named)
    refresh.click(lambda: gr.update(choices=loop.find_loops(root)), None, name)
    stop.click(on_stop, [lang, name], message)
    c_dir.input(lambda d: gr.update(choices=forms.datasets_for("ppo", d)), c_dir, c_dataset)
    h_dir.input(lambda d: gr.update(choices=["", *forms.datasets_for("ppo", d)]), h_dir, h_dataset)
    c_start.click(on_candidates, [lang, name, c_dir, c_dataset, c_upload, c_samples, c_k, c_temps, c_tokens,
                                  c_guideline, *top.inputs()], [message, c_yaml])
    e_start.click(on_export, [lang, name, e_pairs, e_people], [message, e_yaml])
    r_start.click(lambda *v: on_train("rm", *v), [lang, name, r_yaml], [message, r_ran, r_yaml, r_made])
    p_start.click(lambda code, n, kind, text, override: on_train(kind, code, n, text, override),
                  [lang, name, p_kind, p_yaml, p_override], [message, p_ran, p_yaml, p_made])
    h_start.click(on_compare, [lang, name, h_annotated, h_dir, h_dataset, h_samples, h_metrics], [message, h_yaml])
    r_reset.click(on_reset_rm, name, [r_yaml, r_made])
    p_reset.click(on_reset_policy, [name, p_kind, p_override], [p_yaml, p_made])
    for control in (p_kind, p_override):
        control.change(on_reset_policy, [name, p_kind, p_override], [p_yaml, p_made])
    a_open.click(on_open, name, [page.tabs, annotate_project])
    r_more.click(on_more, [lang, name], [page.tabs, annotate_project, message])
    timer.tick(on_tick, [lang, name, r_yaml, r_made, p_yaml, p_made, p_kind, p_override, h_which, seen], live)
    tab.select(lambda: None, None, seen)
    page.lang_changed.append((lambda: None, None, seen))

    def guideline_in(code: str, text: str):
        """The default guideline follows the language until someone writes their own."""
        defaults = {translate(lang, "loop_default_guideline") for lang in LANGUAGES}
        return translate(code, "loop_default_guideline") if text in defaults else gr.skip()

    page.lang_changed.append((guideline_in, [lang, c_guideline], c_guideline))
    page.lang_changed.append((lambda code: gr.update(choices=[(translate(code, f"loop_set_{s}"), s)
                                                              for s in loop.COMPARE_SETS]), lang, h_which))
