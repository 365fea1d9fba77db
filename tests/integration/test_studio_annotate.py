"""The Annotate page's save path, through the HTTP layer the page's script uses (`POST
/gradio_api/component_server`, function `act`) on a real `alignlab webui --auth` process: the server is
killed -9 in the middle of 200 scripted saves; every acknowledged save is on disk, nothing is torn,
and after a restart the unacknowledged ones are sent again with the same client ids (as the page's
script does) and recorded once each. The annotator is the login name, not what the client claims."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import ROOT
from tests.integration.webui_helpers import free_port

pytestmark = pytest.mark.timeout(400)
USERS = {"alice": "pw-a", "bob": "pw-b"}
ITEMS = 50  # 3 ranks + 1 submit each: 200 saves


def write_project(folder) -> None:
    folder.mkdir(parents=True)
    rows = [{"id": f"q{i}", "prompt": {"system": "", "history": [], "instruction": f"question {i}"},
             "candidates": [{"id": f"c{j}", "text": f"answer {j} to {i}"} for j in range(3)]} for i in range(ITEMS)]
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def start_ui(root, log_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "alignlab.cli", "webui", "--port", str(port), "--runs-root", str(root),
         "--dataset-dir", str(ROOT / "data"), "--auth", ",".join(f"{u}:{p}" for u, p in USERS.items())],
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/config", timeout=2).status_code in (200, 401):
                return process, url
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log_path.read_text()[-2000:]
        time.sleep(0.5)
    raise AssertionError("the UI did not start")


def logged_in(url: str, user: str) -> tuple[httpx.Client, int]:
    """A client with the login cookie, and the id of the Annotate widget from the page's config."""
    client = httpx.Client(base_url=url, timeout=30)
    assert client.post("/login", data={"username": user, "password": USERS[user]}).status_code == 200
    config = client.get("/config").json()
    widget = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "annotate")
    return client, widget


def save(client: httpx.Client, widget: int, project, action: dict) -> dict:
    body = {"session_hash": "scripted", "component_id": widget, "fn_name": "act",
            "data": {"project": str(project), "annotator": "mallory", "lang": "en", "op": "action", **action}}
    reply = client.post("/gradio_api/component_server", json=body)
    reply.raise_for_status()
    return reply.json()


def scripted_saves() -> list[dict]:
    saves = []
    for i in range(ITEMS):
        ranks = {"c0": 1 + i % 3, "c1": 1 + (i + 1) % 3, "c2": 1 + (i + 2) % 3}
        saves += [{"client_id": f"r{i}-{c}", "item_id": f"q{i}", "kind": "rank", "payload": {"candidate": c, "rank": r}}
                  for c, r in ranks.items()]
        saves.append({"client_id": f"s{i}", "item_id": f"q{i}", "kind": "submit", "payload": {"ranks": ranks}})
    return saves


def on_disk(database) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT client_id, annotator, kind, payload FROM actions WHERE kind != 'show' "
                          "ORDER BY seq").fetchall()


def test_kill_during_saves_loses_no_acknowledged_save(tmp_path):
    project = tmp_path / "runs" / "studio" / "demo"
    write_project(project)
    log = tmp_path / "ui.log"
    saves = scripted_saves()
    assert len(saves) == 200
    process, url = start_ui(tmp_path / "runs", log)
    acknowledged: list[str] = []
    stop = threading.Event()

    def annotate():
        client, widget = logged_in(url, "alice")
        for action in saves:
            if stop.is_set():
                return
            try:
                reply = save(client, widget, project, action)
            except httpx.HTTPError:
                return
            assert reply["ok"], reply
            acknowledged.append(action["client_id"])

    sender = threading.Thread(target=annotate)
    try:
        sender.start()
        while len(acknowledged) < 90 and sender.is_alive():
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        stop.set()
        sender.join(60)
        process.wait(30)
        recorded = on_disk(project / "annotations.sqlite")
        ids = [r[0] for r in recorded]
        assert 90 <= len(acknowledged) < 200
        # every acknowledged save is on disk, in order; at most the one in flight at the kill is there unacknowledged
        assert ids[:len(acknowledged)] == acknowledged and len(ids) - len(acknowledged) <= 1
        assert all(r[1] == "alice" for r in recorded)  # the login name, not the "mallory" the client sent
        assert all(isinstance(json.loads(r[3]), dict) for r in recorded)  # no torn record

        process, url = start_ui(tmp_path / "runs", log)
        client, widget = logged_in(url, "alice")
        for action in saves[len(acknowledged):]:  # the page's script resends what was not acknowledged
            assert save(client, widget, project, action)["ok"]
        # a lost reply resent once more records nothing new
        assert save(client, widget, project, saves[-1])["ok"]
        recorded = on_disk(project / "annotations.sqlite")
        assert [r[0] for r in recorded] == [a["client_id"] for a in saves]
        view = save(client, widget, project, {**saves[0], "kind": "rank"})["view"]
        assert view["done"] == ITEMS and view["per_annotator"] == {"alice": ITEMS}

        bob, widget = logged_in(url, "bob")  # a second annotator labels the same items under his own name
        reply = save(bob, widget, project, {"client_id": "b0", "item_id": "q0", "kind": "skip", "payload": {}})
        assert reply["ok"] and reply["view"]["per_annotator"] == {"alice": ITEMS, "bob": 1}
        assert reply["view"]["item"]["id"] == "q1"  # after a skip, the next item bob has not done
        refused = save(bob, widget, project, {"client_id": "b1", "item_id": "q1", "kind": "rank",
                                              "payload": {"candidate": "c9", "rank": 1}})
        assert not refused["ok"] and "c9" in refused["error"]
        assert len(on_disk(project / "annotations.sqlite")) == 201
    finally:
        stop.set()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
