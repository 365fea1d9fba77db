"""The Chat tab: two slots side by side, A (the top bar's model) and B (its own model and adapters, e.g.
the base model beside an aligned run), each an `alignlab api` subprocess loaded and unloaded here; one
prompt goes to every loaded slot and both columns stream at once with the same sampling settings."""

from __future__ import annotations

import gradio as gr

from ..config import GeneratingArguments
from . import chat
from .chat import ChatServers, Sampling, ServerFailed, Turn
from .i18n import translate
from .page import Page, model_keys

STATUS_REFRESH_S = 5.0
CHAT_MAX_NEW_TOKENS = 512  # the registry's 1024 does not fit the bundled model's 1024-token context


def status_line(code: str, status: chat.SlotStatus) -> str:
    """A slot's status line: not loaded, loading, ready (model, adapters, port, memory), failed, stopped."""
    adapters = f" + `{status.adapters}`" if status.adapters else ""
    return translate(code, f"chat_status_{status.state}", slot=status.slot, model=status.model, adapters=adapters,
                     port=status.port, memory=f"{status.rss_mb:,.0f}", seconds=f"{status.seconds:.0f}",
                     error=status.error.replace("`", "'"))


def build(page: Page) -> ChatServers:
    said, top = page.said, page.top
    servers = ChatServers(page.root / ".webui")
    defaults = GeneratingArguments()
    with said(gr.Tab(translate("en", "tab_chat"), id="chat"), "tab_chat") as tab:
        with gr.Row(equal_height=True):
            said(gr.Markdown(), "chat_slot_a", "value")
            with gr.Row():
                model_b = said(gr.Dropdown(page.model_choices(), value=None, allow_custom_value=True, label="",
                                           elem_id="chat_model_b", scale=3), "chat_model_b")
                adapters_b = said(gr.Dropdown(page.adapter_choices(), value=[], multiselect=True,
                                              allow_custom_value=True, label="", elem_id="chat_adapters_b", scale=3),
                                  "chat_adapters_b")
        with gr.Row():
            load_a = said(gr.Button("", size="sm", variant="primary", elem_id="chat_load_a"), "chat_load", "value")
            unload_a = said(gr.Button("", size="sm", elem_id="chat_unload_a"), "chat_unload", "value")
            load_b = said(gr.Button("", size="sm", variant="primary", elem_id="chat_load_b"), "chat_load", "value")
            unload_b = said(gr.Button("", size="sm", elem_id="chat_unload_b"), "chat_unload", "value")
        with gr.Row():
            status_a = gr.Markdown(status_line("en", servers.status("A")), elem_id="chat_status_a")
            status_b = gr.Markdown(status_line("en", servers.status("B")), elem_id="chat_status_b")
        with gr.Row():
            chat_a = gr.Chatbot(label="A", height=440, elem_id="chat_a", feedback_options=None, buttons=["copy_all"])
            chat_b = gr.Chatbot(label="B", height=440, elem_id="chat_b", feedback_options=None, buttons=["copy_all"])
        with gr.Row():
            prompt = said(gr.Textbox(label="", lines=1, max_lines=8, scale=6, elem_id="chat_prompt"), "chat_prompt")
            with gr.Column(scale=1, min_width=120):
                send = said(gr.Button("", variant="primary", elem_id="chat_send"), "chat_send", "value")
                clear = said(gr.Button("", elem_id="chat_clear"), "chat_clear", "value")
        message = gr.Markdown(elem_id="chat_message")
        with said(gr.Accordion("", open=True, elem_id="chat_settings"), "chat_settings"):
            system = said(gr.Textbox(label="", lines=2, max_lines=6, elem_id="chat_system"), "chat_system")
            with gr.Row():
                temperature = said(gr.Slider(0, 2, value=defaults.temperature, step=0.01, label="",
                                             elem_id="chat_temperature"), "chat_temperature")
                top_p = said(gr.Slider(0.01, 1, value=defaults.top_p, step=0.01, label="", elem_id="chat_top_p"),
                             "chat_top_p")
                top_k = said(gr.Number(defaults.top_k, precision=0, minimum=0, label="", elem_id="chat_top_k"),
                             "chat_top_k")
                max_new_tokens = said(gr.Number(CHAT_MAX_NEW_TOKENS, precision=0, minimum=1, label="",
                                                elem_id="chat_max_new_tokens"), "chat_max_new_tokens")
                seed = said(gr.Number(42, precision=0, label="", elem_id="chat_seed"), "chat_seed")
        turns_a, turns_b = gr.State([]), gr.State([])
        timer = gr.Timer(STATUS_REFRESH_S)

    def statuses(code: str):
        return [status_line(code, servers.status(slot)) for slot in chat.SLOTS]

    def on_load(slot: str, code: str, *picked):
        keys = model_keys(*picked)
        if not keys.get("model_name_or_path"):
            yield translate(code, f"chat_no_model_{slot.lower()}")
            return
        server = servers.start(slot, keys)
        try:
            for _ in servers.wait_ready(server):
                yield status_line(code, servers.status(slot))
        except ServerFailed:
            pass
        yield status_line(code, servers.status(slot))

    def on_unload(slot: str, code: str):
        servers.unload(slot)
        return status_line(code, servers.status(slot))

    def shown(code: str, turns: list[Turn]) -> list[dict]:
        return chat.render(turns, translate(code, "chat_thinking"), translate(code, "chat_error", error="{error}"))

    def on_send(code, text, turns_of_a, turns_of_b, system_prompt, temp, p, k, new_tokens, seed_value, thinking):
        history = {"A": list(turns_of_a or []), "B": list(turns_of_b or [])}
        text = (text or "").strip()
        answering = {slot: server for slot in chat.SLOTS
                     if (server := servers.get(slot)) and servers.status(slot).state in ("ready", "stopped")}
        if not text:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), ""
            return
        if not answering:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), translate(code, "chat_nothing_loaded")
            return
        sampling = Sampling(float(temp), float(p), int(k or 0), int(new_tokens or CHAT_MAX_NEW_TOKENS),
                            None if seed_value is None else int(seed_value), bool(thinking))
        jobs = {slot: (server, chat.openai_messages(history[slot], system_prompt or "", text), Turn(text))
                for slot, server in answering.items()}
        for slot, (_, _, turn) in jobs.items():
            history[slot].append(turn)
        yield "", shown(code, history["A"]), shown(code, history["B"]), history["A"], history["B"], ""
        for latest in chat.stream_side_by_side(jobs, sampling):
            for slot, turn in latest.items():
                history[slot][-1] = turn
            yield gr.skip(), shown(code, history["A"]), shown(code, history["B"]), history["A"], history["B"], \
                gr.skip()

    def on_clear():
        return [], [], [], [], ""


    def on_load_a(code: str, *picked):
        yield from on_load("A", code, *picked)

    def on_load_b(code: str, *picked):
        yield from on_load("B", code, *picked)

    lang = page.lang
    picked_b = [model_b, top.finetuning_type, adapters_b, top.template, top.enable_thinking]
    load_a.click(on_load_a, [lang, *top.inputs()], status_a)
    load_b.click(on_load_b, [lang, *picked_b], status_b)
    unload_a.click(lambda code: on_unload("A", code), lang, status_a)
    unload_b.click(lambda code: on_unload("B", code), lang, status_b)
    send_inputs = [lang, prompt, turns_a, turns_b, system, temperature, top_p, top_k, max_new_tokens, seed,
                   top.enable_thinking]
    send_outputs = [prompt, chat_a, chat_b, turns_a, turns_b, message]
    sending = [send.click(on_send, send_inputs, send_outputs),
               prompt.submit(on_send, send_inputs, send_outputs)]
    chat_a.clear(lambda: [], None, turns_a)  # the column's own bin empties its history too
    chat_b.clear(lambda: [], None, turns_b)
    clear.click(on_clear, None, [chat_a, chat_b, turns_a, turns_b, message], cancels=sending)
    timer.tick(statuses, lang, [status_a, status_b], show_progress="hidden")
    tab.select(lambda code: [*statuses(code), gr.update(choices=page.model_choices()),
                             gr.update(choices=page.adapter_choices())], lang, [status_a, status_b, model_b, adapters_b])
    page.lang_changed.append((statuses, lang, [status_a, status_b]))
    lang.change(lambda code, a, b: (shown(code, a or []), shown(code, b or [])), [lang, turns_a, turns_b],
                [chat_a, chat_b])  # the thoughts' titles in the new language
    return servers
