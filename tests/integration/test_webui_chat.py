"""The Chat tab's servers as real `alignlab api` processes on the tiny model: load, stream the greedy
answer, two at once, a server killed under the page, unload frees the memory (RSS read from /proc), a
bad model path gives one clear line and leaves no process; the supervisor ends a server whose UI was
killed -9; and the tab in a real browser: base model in A, a LoRA run in B, one prompt, both columns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from alignlab.webui import chat
from alignlab.webui.chat import ChatServers, Sampling, ServerFailed, Turn
from tests.conftest import ROOT, TINY, save_tiny_model
from tests.integration.test_webui_browser import SHOTS, _free_port, browser, pick  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(300)
PROMPT = "孩子身高 95 cm，买童装选多大码？"
GREEDY = Sampling(temperature=0, top_p=1.0, top_k=0, max_new_tokens=12, seed=42, enable_thinking=False)


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """A random tiny model whose greedy text varies (whole words, not byte pieces)."""
    return save_tiny_model(tmp_path_factory.mktemp("chat-model"), seed=3, init_range=0.3)


def greedy_answer(info: dict, prompt: str = PROMPT, max_tokens: int = 12) -> str:
    """The server's non-streamed greedy answer, through the official client and the slot's json file."""
    from openai import OpenAI

    client = OpenAI(base_url=info["url"], api_key=info["api_key"], max_retries=0)
    answer = client.chat.completions.create(model=info["model"], messages=[{"role": "user", "content": prompt}],
                                            temperature=0, max_tokens=max_tokens)
    return answer.choices[0].message.content


def children_rss() -> int:
    return chat.tree_rss(os.getpid(), include_self=False)


def group_pids(server) -> list[int]:
    return [p for p in chat._group_members(server.process.pid) if not chat._zombie(p)]


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")  # not even a zombie


def test_load_stream_side_by_side_kill_and_unload_frees_memory(chat_model_dir, tmp_path):
    servers = ChatServers(tmp_path / ".webui")
    keys = {"model_name_or_path": str(chat_model_dir), "template": "qwen3_nothink"}
    a, b = servers.start("A", keys), servers.start("B", keys)
    assert servers.status("A").state == "loading"
    try:
        for server in (a, b):
            for _ in servers.wait_ready(server):
                pass
        health = httpx.get(a.url + "/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert (tmp_path / ".webui" / "chat-A.yaml").read_text().startswith("infer_backend: huggingface\n")
        info_file = tmp_path / ".webui" / "chat-A.json"
        info = json.loads(info_file.read_text())
        assert info["port"] == a.port and info_file.stat().st_mode & 0o077 == 0  # the key: the user's only
        expected = greedy_answer(info)
        assert expected

        steps = list(chat.stream_turn(a, chat.openai_messages([], "", PROMPT), GREEDY, Turn(PROMPT)))
        assert steps[-1].done and not steps[-1].error and steps[-1].answer == expected
        assert len({s.answer for s in steps}) > 3  # it came token by token
        both = list(chat.stream_side_by_side({slot: (s, chat.openai_messages([], "", PROMPT), Turn(PROMPT))
                                              for slot, s in (("A", a), ("B", b))}, GREEDY))
        assert both[-1]["A"].answer == both[-1]["B"].answer == expected  # same model, same greedy answer

        [server_b] = [p for p in group_pids(b) if p != b.process.pid]  # the api process under its supervisor
        os.kill(server_b, signal.SIGKILL)
        [died] = list(chat.stream_turn(b, [{"role": "user", "content": "hi"}], GREEDY, Turn("hi")))
        assert died.done and died.error.startswith("the server of B stopped (exit status")
        assert "Traceback" not in died.error and servers.status("B").state == "stopped"

        ready = servers.status("A")
        assert ready.state == "ready" and ready.port == a.port and ready.rss_mb > 100
        before, pids = children_rss(), group_pids(a)
        unloading = threading.Thread(target=servers.unload, args=("A",))
        unloading.start()
        while unloading.is_alive():  # what a status refresh during the unload shows
            state = servers.status("A").state
            assert state in ("ready", "unloading") or all(gone(p) for p in pids), state
            time.sleep(0.01)
        unloading.join()
        assert servers.status("A").state == "empty" and not servers.unload("A")
        after = children_rss()
        assert all(gone(p) for p in pids) and not info_file.exists()
        assert after < before - 100 * 2**20, (before, after)  # the model's memory is given back
    finally:
        servers.unload_all()
    assert gone(b.process.pid)


def test_a_bad_model_path_is_one_clear_line_and_leaves_no_process(tmp_path):
    servers = ChatServers(tmp_path / ".webui")
    missing = tmp_path / "no-such-model"
    server = servers.start("B", {"model_name_or_path": str(missing)})
    with pytest.raises(ServerFailed) as failure:
        for _ in servers.wait_ready(server):
            pass
    line = str(failure.value)
    assert str(missing) in line and "not a local folder" in line and "\n" not in line
    status = servers.status("B")
    assert status.state == "failed" and status.error == line
    assert gone(server.process.pid)  # reaped: no zombie
    assert servers.get("B") is None and not (tmp_path / ".webui" / "chat-B.json").exists()


def test_the_server_ends_when_the_ui_is_killed(tmp_path):
    """A UI killed -9 runs no atexit: the supervisor sees its parent gone and ends the server."""
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-m', 'alignlab.webui.chat', str(__import__('os').getpid()),"
              " 'sleep', '300'], start_new_session=True)\n"
              "print(p.pid, flush=True)\ntime.sleep(300)\n")
    ui = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    supervisor = int(ui.stdout.readline())
    deadline = time.monotonic() + 20
    while not [p for p in chat._group_members(supervisor) if p != supervisor] and time.monotonic() < deadline:
        time.sleep(0.1)
    [sleeper] = [p for p in chat._group_members(supervisor) if p != supervisor]
    ui.kill()
    ui.wait()
    deadline = time.monotonic() + 15
    while not (chat._group_gone(supervisor)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert chat._group_gone(supervisor) and gone(sleeper)


@pytest.fixture
def lora_run(chat_model_dir, tmp_path):
    """A LoRA run folder (random, non-zero adapter) as training leaves one: adapter, tokenizer, run_config."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def make(root):
        path = root / "sft-lora"
        torch.manual_seed(1)
        base = AutoModelForCausalLM.from_pretrained(chat_model_dir)
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                                init_lora_weights=False))
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(TINY).save_pretrained(path)
        (path / "run_config.yaml").write_text(f"stage: sft\nfinetuning_type: lora\ntemplate: qwen3_nothink\n"
                                              f"model_name_or_path: {chat_model_dir}\n")
        return path
    return make


@pytest.fixture
def served(chat_model_dir, tmp_path):
    """The web UI in this process (its chat servers are this process's children), the chat model offered."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'alignlab[webui]')")
    from alignlab.webui.app import CSS, build_app

    root = tmp_path / "saves"
    app = build_app(root, str(ROOT / "data"), models=(str(chat_model_dir),))
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    yield f"http://127.0.0.1:{port}/", root
    app.close()


def test_chat_tab_side_by_side_in_the_browser(browser, served, chat_model_dir, lora_run):  # noqa: F811
    url, root = served
    run = lora_run(root)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Chat").click()
    page.wait_for_selector("#chat_load_a", timeout=60_000)
    pick(page, "model", str(chat_model_dir))
    pick(page, "template", "qwen3_nothink")
    pick(page, "chat_model_b", str(chat_model_dir))
    page.locator("#chat_adapters_b input").click()
    page.locator("#chat_adapters_b").get_by_role("option", name=str(run), exact=True).click()
    page.keyboard.press("Escape")
    page.click("#chat_load_a")
    page.click("#chat_load_b")
    for slot in ("a", "b"):
        page.locator(f"#chat_status_{slot}").get_by_text("port").wait_for(timeout=90_000)
    assert f"`{run}`" not in page.locator("#chat_status_b").inner_text()  # rendered, not raw markdown
    assert str(run) in page.locator("#chat_status_b").inner_text() and " MB" in page.locator("#chat_status_b").inner_text()
    info = {slot: json.loads((root / ".webui" / f"chat-{slot}.json").read_text()) for slot in ("A", "B")}
    expected = {slot: greedy_answer(info[slot], max_tokens=12) for slot in ("A", "B")}
    assert expected["A"] != expected["B"]  # the adapter changes the answers: two models answer

    for elem_id, value in (("chat_temperature", 0), ("chat_max_new_tokens", 12)):
        box = page.locator(f"#{elem_id} input").first
        box.fill(str(value))
        box.press("Tab")
    page.locator("#chat_prompt textarea").fill(PROMPT)
    page.locator("#chat_prompt textarea").press("Enter")
    for slot in ("a", "b"):
        bot = page.locator(f"#chat_{slot} .message.bot").last
        bot.wait_for(timeout=60_000)
        page.wait_for_function(
            "([sel, text]) => { const m = document.querySelectorAll(sel); return m.length && "
            "m[m.length - 1].innerText.trim() === text.trim(); }",
            arg=[f"#chat_{slot} .message.bot", expected[slot.upper()]], timeout=60_000)
    shown = {slot: page.locator(f"#chat_{slot} .message.bot").last.inner_text().strip() for slot in ("a", "b")}
    assert shown == {"a": expected["A"].strip(), "b": expected["B"].strip()}
    assert page.locator("#chat_a .message.user").last.inner_text().strip() == PROMPT
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "webui_chat.png"), full_page=True)

    pids = [info[slot]["pid"] for slot in ("A", "B")]
    page.click("#chat_unload_a")
    page.click("#chat_unload_b")
    for slot in ("a", "b"):
        page.locator(f"#chat_status_{slot}").get_by_text("not loaded").wait_for(timeout=30_000)
    assert all(gone(pid) for pid in pids)
    page.locator("#language").get_by_text("中文").click()
    page.locator("#chat_status_b").get_by_text("未加载").wait_for(timeout=30_000)
    assert page.get_by_role("button", name="发送").is_visible()
