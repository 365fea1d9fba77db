"""The Annotate tab: a person ranks a studio project's candidates, keyboard first.

The widget is one `gr.HTML` whose script (annotate.js) talks to the server function `act` directly
(`POST /gradio_api/component_server`, behind the login check): one action, one committed store row,
then the reply. The annotator is the login name under `--auth`, else the name typed in the page.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from ..config import ConfigError
from ..studio.candidates import GUIDELINE
from ..studio.project import Project, view
from ..studio.store import DONE, ActionError
from .i18n import strings, translate
from .page import Page

SCRIPT = Path(__file__).with_name("annotate.js").read_text(encoding="utf-8")
CSS = """
.annotate-root {font-size: 15px; line-height: 1.5}
.ann-head {display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin-bottom: 8px}
.ann-people {color: #666}
.ann-save {margin-left: auto; padding: 2px 10px; border-radius: 10px; font-size: 13px}
.ann-save.ok {background: #e7f6ec; color: #17693a} .ann-save.busy {background: #fff4d6; color: #8a5a00}
.ann-save.bad {background: #fde8e8; color: #a11}
.ann-guide {border: 1px solid #e3e3e8; border-radius: 6px; padding: 4px 10px; margin-bottom: 8px; background: #fafafa}
.ann-error {border: 1px solid #d33; border-radius: 6px; padding: 4px 10px; margin-bottom: 8px; color: #a11}
.ann-item {border-left: 4px solid #f97316; padding: 4px 12px; margin-bottom: 10px}
.ann-where {color: #666; font-size: 13px} .ann-prompt {font-weight: 600; white-space: pre-wrap; overflow-wrap: anywhere}
.ann-cands {display: flex; flex-direction: column; gap: 8px}
.ann-cand {border: 1px solid #d0d0d7; border-radius: 8px; padding: 6px 10px; overflow-wrap: anywhere}
.ann-cand.cur {border-color: #f97316; box-shadow: 0 0 0 2px #fed7aa}
.ann-cand-head {display: flex; align-items: center; gap: 10px; flex-wrap: wrap}
.ann-letter {font-weight: 700; width: 1.6em; height: 1.6em; border-radius: 50%; background: #eee; text-align: center}
.ann-rank {min-width: 6em; font-weight: 600}
.ann-rank-btns {margin-left: auto; display: flex; gap: 4px}
.ann-rank-btn {min-width: 2.2em; padding: 1px 6px; font-size: 13px; border: 1px solid #ccc; border-radius: 4px; background: #fff; cursor: pointer}
.ann-rank-btn.on {background: #f97316; color: #fff; border-color: #f97316}
.ann-body summary {color: #888; font-size: 12px; cursor: pointer}
.ann-md {max-height: 28em; overflow: auto} .ann-md pre {white-space: pre-wrap}
.ann-edit textarea {width: 100%; font-family: inherit}
.ann-edited {border: 1px dashed #17693a; border-radius: 6px; padding: 4px 10px; margin-top: 8px}
.ann-actions {display: flex; gap: 8px; flex-wrap: wrap; margin-top: 10px}
.ann-btn {padding: 4px 12px; border: 1px solid #ccc; border-radius: 6px; background: #fff; cursor: pointer}
.ann-btn.primary {background: #f97316; color: #fff; border-color: #f97316} .ann-btn:disabled {opacity: .4}
.ann-keys {color: #777; font-size: 12px; margin-top: 6px}
.ann-status-submitted {color: #17693a} .ann-status-skipped, .ann-status-flagged {color: #8a5a00}
"""


def markdown_html(text: str) -> str:
    """Markdown as HTML, raw HTML in the text escaped (candidates are model output)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "breaks": True}).render(text or "")


def find_projects(root: Path) -> list[str]:
    """Studio folders (holding candidates.jsonl) under the runs root, newest first."""
    found = [p.parent for p in root.glob("**/candidates.jsonl") if len(p.relative_to(root).parts) <= 4]
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def login_name(request) -> str | None:
    """The logged-in user of a request (Gradio's access-token cookie), None without --auth."""
    request = getattr(request, "request", None) or request
    app = getattr(request, "app", None)
    cookie_id = getattr(app, "cookie_id", None)
    if app is None or cookie_id is None:
        return None
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(f"access-token-unsecure-{cookie_id}")
    return getattr(app, "tokens", {}).get(token)


class Projects:
    """Open projects by folder; reopened when candidates.jsonl has grown (a candidates job still writing)."""

    def __init__(self):
        self.open: dict[str, tuple[float, int, Project]] = {}

    def get(self, folder: str) -> Project:
        if not folder:
            raise ConfigError("pick a studio project (a folder with candidates.jsonl)")
        path = Path(folder) / "candidates.jsonl"
        stat = path.stat() if path.is_file() else None
        key = str(Path(folder).resolve())
        held = self.open.get(key)
        if held and stat and (held[0], held[1]) == (stat.st_mtime, stat.st_size):
            return held[2]
        if held:
            held[2].close()
        project = Project(folder)
        self.open[key] = (stat.st_mtime, stat.st_size, project)
        return project


def decorated(project: Project, shown: dict) -> dict:
    """The view with its texts rendered for the page."""
    if shown.get("item"):
        shown["item"]["prompt_html"] = markdown_html(shown["item"]["instruction"])
        for c in shown["candidates"]:
            c["html"] = markdown_html(c["text"])
        if shown.get("edit"):
            shown["edit_html"] = markdown_html(shown["edit"])
    guideline = project.folder / GUIDELINE
    if guideline.is_file():
        shown["guideline_html"] = markdown_html(guideline.read_text(encoding="utf-8"))
    return shown


def answer(projects: Projects, data: dict, login: str | None) -> dict:
    """One call of the page: `view` an item or record an `action`; the reply holds the view to show."""
    lang = data.get("lang") if data.get("lang") in ("en", "zh") else "en"
    said = {k: v for k, v in strings(lang).items() if k.startswith("ann_")}
    annotator = login or str(data.get("annotator") or "").strip()
    try:
        project = projects.get(str(data.get("project") or ""))
        if not annotator:
            raise ActionError(translate(lang, "ann_no_name"))
        item_id = data.get("item_id")
        if data.get("op") == "action":
            kind = str(data.get("kind"))
            project.act(annotator, str(data.get("client_id") or ""), str(item_id), kind, data.get("payload") or {})
            item_id = project.next_open(annotator, after=item_id) if kind in DONE else item_id
        return {"ok": True, "view": decorated(project, view(project, annotator, item_id)), "strings": said}
    except (ActionError, ConfigError, OSError) as e:
        return {"ok": False, "error": str(e), "strings": said}


def build(page: Page) -> gr.Dropdown:
    """The tab; returns its project picker (the Loop tab opens a loop's project in it)."""
    said = page.said
    projects = Projects()

    def act(data: dict, request: gr.Request) -> dict:
        return answer(projects, data if isinstance(data, dict) else {}, login_name(request))

    with said(gr.Tab(translate("en", "tab_annotate"), id="annotate"), "tab_annotate"):
        said(gr.Markdown(translate("en", "ann_intro")), "ann_intro", "value")
        with gr.Row(equal_height=True):
            project = said(gr.Dropdown(find_projects(page.root), value=None, allow_custom_value=True, label="",
                                       scale=3, elem_id="ann_project"), "ann_project")
            name = said(gr.Textbox("", label="", max_lines=1, scale=1, elem_id="ann_name"), "ann_name")
            refresh = said(gr.Button("", size="sm", scale=0, min_width=120, elem_id="ann_refresh"), "ann_refresh", "value")
        widget = gr.HTML(json.dumps({"project": "", "annotator": "", "lang": "en"}),
                         html_template='<div class="annotate-root"></div>', css_template=CSS, js_on_load=SCRIPT,
                         server_functions=[act], elem_id="annotate")

    def value(folder: str | None, who: str, code: str, nonce: int = 0) -> str:
        return json.dumps({"project": folder or "", "annotator": (who or "").strip(), "lang": code, "nonce": nonce})

    # One listener, run one at a time in trigger order (the last pending one wins): the blur of the name box,
    # triggered before the project was picked, must not land after the project's change and empty it.
    gr.on([project.change, name.submit, name.blur], value, [project, name, page.lang], widget,
          trigger_mode="always_last", concurrency_limit=1, concurrency_id="annotate-value", show_progress="hidden")
    refresh.click(lambda: gr.update(choices=find_projects(page.root)), None, project)
    page.lang_changed.append((value, [project, name, page.lang], widget))
    return project
