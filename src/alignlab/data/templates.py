"""Chat templates: messages -> token ids, turn by turn, so that labels follow from structure.

A template is a set of slots (strings with `{{content}}`, plus BOS/EOS placeholders) per role,
as in LLaMA-Factory. Each message is tokenised on its own slot, so the prompt/response boundary of
every turn is known exactly without slicing rendered strings. `template: null` uses the
tokenizer's own Jinja chat template instead (see `JinjaTemplate`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UserError
from .tools import format_function_calls, format_tools, parse_function_calls, parse_tools

logger = logging.getLogger(__name__)

BOS = ("special", "bos_token")
EOS = ("special", "eos_token")
Slot = tuple  # elements: str with {{content}}, BOS, EOS

ROLES = ("user", "assistant", "observation", "function")


class TemplateError(ValueError, UserError):
    """A template cannot encode the given messages; the message says why and what to do."""


@dataclass(frozen=True)
class Template:
    name: str
    user: Slot = ("{{content}}",)
    assistant: Slot = ("{{content}}", EOS)
    system: Slot = ("{{content}}",)
    observation: Slot | None = None  # None: same as user
    function: Slot | None = None  # None: same as assistant
    prefix: Slot = ()
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    tool_format: str = "default"
    efficient_eos: bool = False  # EOS only after the last turn (the slots carry none)
    replace_eos: bool = False  # the first stop word becomes the tokenizer's EOS
    fuse_system: bool = False  # system text goes inside the first user turn (llama2 style)
    reasoning: bool = False  # a <think> block precedes every answer (qwen3)
    thought_words: tuple[str, str] = ("<think>\n", "\n</think>\n\n")
    enable_thinking: bool | None = True
    preserve_thinking: bool = False  # keep history thoughts in prompts (rm/dpo/kto/ppo, mask_history)

    # ---- tokenizer set-up -------------------------------------------------------------
    def fix_tokenizer(self, tokenizer) -> None:
        """Make EOS/pad/stop words of the tokenizer match the template."""
        stop_words = list(self.stop_words)
        if self.replace_eos:
            if tokenizer.eos_token != stop_words[0]:
                added = tokenizer.add_special_tokens({"eos_token": stop_words[0]})
                if added:
                    logger.warning("Added EOS token %s: set `resize_vocab: true`.", stop_words[0])
            stop_words = stop_words[1:]
        if tokenizer.eos_token_id is None:
            tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        missing = [w for w in stop_words if tokenizer.convert_tokens_to_ids(w) in (None, tokenizer.unk_token_id)]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                         replace_extra_special_tokens=False)
            logger.warning("Added stop words %s as tokens: set `resize_vocab: true`.", missing)

    def stop_token_ids(self, tokenizer) -> list[int]:
        ids = {tokenizer.eos_token_id}
        ids.update(tokenizer.convert_tokens_to_ids(w) for w in self.stop_words)
        return sorted(i for i in ids if i is not None)

    # ---- rendering ----------------------------------------------------------------------
    def _ids(self, tokenizer, elements: list) -> list[int]:
        ids: list[int] = []
        for elem in elements:
            if elem == BOS:
                if tokenizer.bos_token_id is not None:
                    ids.append(tokenizer.bos_token_id)
            elif elem == EOS:
                ids.append(tokenizer.eos_token_id)
            elif elem:
                ids += tokenizer.encode(elem, add_special_tokens=False)
        return ids

    @staticmethod
    def _fill(slot: Slot, content: str) -> list:
        return [e.replace("{{content}}", content) if isinstance(e, str) else e for e in slot]

    def _text(self, tokenizer, elements: list) -> str:
        out = []
        for elem in elements:
            if elem == BOS:
                out.append(tokenizer.bos_token or "")
            elif elem == EOS:
                out.append(tokenizer.eos_token)
            else:
                out.append(elem)
        return "".join(out)

    def _message_elements(self, tokenizer, i: int, message: dict, system: str, tools: str) -> list:
        elements: list = []
        system_text = ""
        if i == 0:
            elements += list(self.prefix)
            tool_text = format_tools(self.tool_format, parse_tools(tools)) if tools else ""
            if system or tool_text:
                filled = self._fill(self.system, system + tool_text)
                if self.fuse_system:
                    system_text = self._text(tokenizer, filled)
                else:
                    elements += filled
        role, content = message["role"], message["content"]
        if role == "user":
            elements += self._fill(self.user, system_text + content)
        elif role == "assistant":
            elements += self._fill(self.assistant, content)
        elif role == "observation":
            elements += self._fill(self.observation or self.user, content)
        elif role == "function":
            try:
                calls = parse_function_calls(content)
            except (ValueError, KeyError, TypeError) as e:
                raise TemplateError(
                    f"A function-call turn must be JSON {{\"name\": ..., \"arguments\": ...}} "
                    f"(or a list of them); got {content[:80]!r}: {e}"
                ) from None
            elements += self._fill(self.function or self.assistant,
                                   format_function_calls(self.tool_format, calls))
        else:
            raise TemplateError(f"Unexpected role {role!r}; expected one of {', '.join(ROLES)}.")
        return elements

    def _encode(self, tokenizer, messages: list[dict], system: str | None, tools: str | None):
        system = system or self.default_system
        return [
            self._ids(tokenizer, self._message_elements(tokenizer, i, m, system, tools or ""))
            for i, m in enumerate(messages)
        ]

    def remove_thought(self, content: str) -> str:
        open_, close = (re.escape(w) for w in self.thought_words)
        return re.sub(f"{open_}(.*?){close}", "", content, flags=re.DOTALL).lstrip("\n")

    def _has_thought(self, content: str) -> bool:
        return any(w.strip() in content for w in self.thought_words)

    def _thought_ids(self, tokenizer) -> list[int]:
        return tokenizer.encode("".join(self.thought_words), add_special_tokens=False)

    def encode_multiturn(self, tokenizer, messages: list[dict], system: str | None = None,
                         tools: str | None = None, discard_history_thoughts: bool = False
                         ) -> list[tuple[list[int], list[int]]]:
        """Return (prompt_ids, response_ids) for every turn; messages alternate user/assistant.

        Reasoning templates (LLaMA-Factory's rules): `enable_thinking: false` removes every thought
        and puts an empty thought block into each prompt (not trained); otherwise an answer without
        a thought gets an empty block in its response (trained). History thoughts are kept, unless
        `discard_history_thoughts` (SFT with `mask_history` and no `preserve_thinking`): then history
        answers lose their thoughts and only the last answer gets an empty block.
        """
        if len(messages) % 2:
            raise TemplateError("encode_multiturn needs (prompt, response) pairs of messages.")
        if not self.reasoning:
            encoded = self._encode(tokenizer, messages, system, tools)
            return [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]
        messages = [dict(m) for m in messages]
        for i in range(1, len(messages), 2):
            if self.enable_thinking is False or (discard_history_thoughts and i < len(messages) - 1):
                messages[i]["content"] = self.remove_thought(messages[i]["content"])
        encoded = self._encode(tokenizer, messages, system, tools)
        turns = [len(messages) - 2] if discard_history_thoughts else range(0, len(messages), 2)
        for i in turns:
            if not self._has_thought(messages[i + 1]["content"]):
                if self.enable_thinking:
                    encoded[i + 1] = self._thought_ids(tokenizer) + encoded[i + 1]
                else:
                    encoded[i] = encoded[i] + self._thought_ids(tokenizer)
        return [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]

    def encode_oneturn(self, tokenizer, messages: list[dict], system: str | None = None,
                       tools: str | None = None) -> tuple[list[int], list[int]]:
        """(prompt_ids, response_ids): everything before the last message, and the last message.

        Reasoning templates drop the thoughts of history answers (unless `preserve_thinking`) and
        give them no empty block, as the model family's own chat template does; the last answer
        follows the `enable_thinking` rule of `encode_multiturn`.
        """
        if self.reasoning:
            messages = [dict(m) for m in messages]
            if not self.preserve_thinking:
                for i in range(1, len(messages) - 2, 2):
                    messages[i]["content"] = self.remove_thought(messages[i]["content"])
            if self.enable_thinking is False:
                messages[-1]["content"] = self.remove_thought(messages[-1]["content"])
        encoded = self._encode(tokenizer, messages, system, tools)
        prompt_ids = [t for ids in encoded[:-1] for t in ids]
        response_ids = encoded[-1]
        if self.reasoning and not self._has_thought(messages[-1]["content"]):
            if self.enable_thinking:
                response_ids = self._thought_ids(tokenizer) + response_ids
            else:
                prompt_ids = prompt_ids + self._thought_ids(tokenizer)
        return prompt_ids, response_ids

    def encode_prompt(self, tokenizer, messages: list[dict], system: str | None = None,
                      tools: str | None = None) -> list[int]:
        """Token ids of a generation prompt: the conversation up to the assistant's answer."""
        return self.encode_oneturn(tokenizer, [*messages, {"role": "assistant", "content": ""}], system, tools)[0]

    def render(self, tokenizer, messages: list[dict], system: str | None = None,
               tools: str | None = None) -> str:
        """The text the model sees for a full conversation (for previews and golden tests)."""
        pairs = self.encode_multiturn(tokenizer, messages, system, tools)
        ids = [t for p, r in pairs for t in p + r]
        return tokenizer.decode(ids, skip_special_tokens=False)

    # ---- export -------------------------------------------------------------------------
    def _jinja_slot(self, tokenizer, slot: Slot, content: str) -> str:
        """A slot as one Jinja expression; `content` is the Jinja expression of the message text."""
        parts = []
        for elem in slot:
            if elem in (BOS, EOS):
                text = (tokenizer.bos_token or "") if elem == BOS else tokenizer.eos_token
                parts.append(json.dumps(text, ensure_ascii=False))
                continue
            pieces = elem.split("{{content}}")
            for k, piece in enumerate(pieces):
                if piece:
                    parts.append(json.dumps(piece, ensure_ascii=False))
                if k < len(pieces) - 1:
                    parts.append(content)
        return "{{- " + (" ~ ".join(parts) or '""') + " }}"

    def to_jinja(self, tokenizer) -> str:
        """A Hugging Face chat template rendering exactly what `encode_multiturn` (a whole
        conversation) and `encode_prompt` (with `add_generation_prompt`) produce: system, user,
        assistant and tool turns; thoughts as the reasoning rules say.
        Tool definitions and tool calls are refused: their text formats live in Python."""
        open_, close = self.thought_words
        empty_thought = json.dumps(open_ + close, ensure_ascii=False)
        lines = [
            "{%- if tools %}{{ raise_exception('This exported template does not render tools; serve the model "
            "with `alignlab api` for function calling.') }}{% endif %}",
            f"{{%- set default_system = {json.dumps(self.default_system, ensure_ascii=False)} %}}",
            f"{{%- set thinking = enable_thinking if enable_thinking is defined else "
            f"{'true' if self.enable_thinking else 'false'} %}}",
            "{%- if messages and messages[0]['role'] == 'system' %}",
            "{%- set system_message = messages[0]['content'] or default_system %}"
            "{%- set loop_messages = messages[1:] %}",
            "{%- else %}{%- set system_message = default_system %}{%- set loop_messages = messages %}{%- endif %}",
            self._jinja_slot(tokenizer, self.prefix, '""'),
        ]
        if self.fuse_system:
            system_text = self._jinja_slot(tokenizer, self.system, "system_message")[4:-3]
            lines.append(f"{{%- set fused = ({system_text}) if system_message else '' %}}")
        else:
            lines.append("{%- set fused = '' %}")
            lines.append("{%- if system_message %}" + self._jinja_slot(tokenizer, self.system, "system_message")
                         + "{%- endif %}")
        lines += [
            "{%- for message in loop_messages %}",
            "{%- set content = message['content'] or '' %}",
            "{%- if message['role'] == 'user' %}",
            "{%- set content = (fused if loop.first else '') ~ content %}",
            self._jinja_slot(tokenizer, self.user, "content"),
            "{%- elif message['role'] == 'assistant' %}",
            "{%- if message.get('tool_calls') %}{{ raise_exception('Tool calls are not rendered by this "
            "exported template; serve the model with `alignlab api`.') }}{%- endif %}",
        ]
        if self.reasoning:
            marks = [json.dumps(w.strip(), ensure_ascii=False) for w in self.thought_words]
            strip = f"{{%- set content = content.split({marks[1]})[-1].lstrip('\n') %}}"
            lines += [  # a generation prompt follows encode_prompt, a whole conversation encode_multiturn
                "{%- if add_generation_prompt %}",
                f"{{%- if {'false' if self.preserve_thinking else 'true'} and {marks[1]} in content %}}{strip}"
                "{%- endif %}",
                f"{{%- else %}}{{%- if not thinking and {marks[1]} in content %}}{strip}{{%- endif %}}",
                f"{{%- if {marks[0]} not in content and {marks[1]} not in content %}}"
                f"{{%- set content = {empty_thought} ~ content %}}{{%- endif %}}",
                "{%- endif %}",
            ]
        lines += [
            self._jinja_slot(tokenizer, self.assistant, "content"),
            "{%- elif message['role'] == 'tool' %}",
            self._jinja_slot(tokenizer, self.observation or self.user, "content"),
            "{%- else %}{{ raise_exception('Unexpected role ' ~ message['role']) }}",
            "{%- endif %}",
            "{%- endfor %}",
        ]
        if self.reasoning:
            lines.append("{%- if add_generation_prompt and not thinking %}{{- " + empty_thought + " }}{%- endif %}")
        if self.efficient_eos:
            lines.append("{%- if loop_messages and loop_messages[-1]['role'] == 'assistant' %}{{- "
                         + json.dumps(tokenizer.eos_token) + " }}{%- endif %}")
        return "\n".join(lines)

    def to_ollama(self, tokenizer) -> str:
        """An Ollama Modelfile (FROM the export folder) with this template's slots and stop words."""
        def go(slot: Slot, content: str) -> str:
            return self._text(tokenizer, self._fill(slot, content))

        template = ("{{ if .System }}" + go(self.system, "{{ .System }}") + "{{ end }}{{ range .Messages }}"
                    '{{ if eq .Role "user" }}' + go(self.user, "{{ .Content }}")
                    + '{{ else if eq .Role "assistant" }}' + go(self.assistant, "{{ .Content }}") + "{{ end }}{{ end }}")
        lines = ["FROM .", "", f'TEMPLATE """{go(self.prefix, "")}{template}"""', ""]
        if self.default_system:
            lines += [f'SYSTEM """{self.default_system}"""', ""]
        for word in dict.fromkeys([tokenizer.eos_token, *self.stop_words]):
            lines.append(f'PARAMETER stop "{word}"')
        lines.append("PARAMETER num_ctx 4096")
        return "\n".join(lines) + "\n"


class JinjaTemplate:
    """`template: null`: the tokenizer's own Jinja chat template.

    Labels come from rendering message prefixes: the text of turn k must start with the text of
    turns < k. Templates that rewrite history (e.g. Qwen3's drops earlier thoughts) fail that
    check with a clear error; name a built-in template for them. Tool definitions, tool calls and
    tool results must show up in what the Jinja renders (a probe checks once): a template that
    drops them would train empty tool-call turns, so data with tools is refused instead.
    """

    name = "jinja"
    efficient_eos = False
    preserve_thinking = False

    def __init__(self, tokenizer, enable_thinking: bool | None = True):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "`template` is unset and the tokenizer has no chat template: set `template` "
                "(e.g. qwen3, llama3, empty)."
            )
        self.enable_thinking = enable_thinking
        self.stop_words: tuple[str, ...] = ()
        self._tool_support: dict[str, bool] | None = None

    def fix_tokenizer(self, tokenizer) -> None:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def stop_token_ids(self, tokenizer) -> list[int]:
        return [tokenizer.eos_token_id]

    @staticmethod
    def _to_chat(messages, system):
        chat = [{"role": "system", "content": system}] if system else []
        for m in messages:
            if m["role"] == "observation":
                chat.append({"role": "tool", "content": m["content"]})
            elif m["role"] == "function":
                calls = parse_function_calls(m["content"])
                chat.append({"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": n, "arguments": a}} for n, a in calls]})
            else:
                chat.append(dict(m))
        return chat

    def _probe_tools(self, tokenizer) -> dict[str, bool]:
        """Which of tool definitions, tool calls and tool results the Jinja renders at all."""
        if self._tool_support is None:
            tool = {"type": "function", "function": {"name": "probe_tool_x7", "description": "probe",
                                                     "parameters": {"type": "object", "properties": {}}}}
            call = {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "probe_call_x7", "arguments": "{}"}}]}
            probes = {
                "tool definitions": ([{"role": "user", "content": "q"}], [tool], "probe_tool_x7"),
                "tool calls": ([{"role": "user", "content": "q"}, call], None, "probe_call_x7"),
                "tool results": ([{"role": "user", "content": "q"}, call, {"role": "tool", "content": "probe_result_x7"}],
                                 None, "probe_result_x7"),
            }
            self._tool_support = {}
            for what, (chat, tools, needle) in probes.items():
                try:
                    text = tokenizer.apply_chat_template(chat, tools=tools, tokenize=False)
                except Exception:  # a template that raises on tools cannot render them either
                    text = ""
                self._tool_support[what] = needle in text
        return self._tool_support

    def _check_tools(self, tokenizer, messages, tools) -> None:
        used = {"tool definitions": bool(tools), "tool calls": any(m["role"] == "function" for m in messages),
                "tool results": any(m["role"] == "observation" for m in messages)}
        missing = [what for what, needed in used.items() if needed and not self._probe_tools(tokenizer)[what]]
        if missing:
            raise TemplateError(
                f"`template` is unset and the tokenizer's chat template does not render {' or '.join(missing)}: "
                f"tool-call turns would be trained empty. Set `template: {suggest_template(tokenizer)}` (a "
                "built-in template renders tools in its `tool_format`)."
            )

    def _render(self, tokenizer, chat, tools, generation: bool) -> str:
        return tokenizer.apply_chat_template(
            chat, tools=parse_tools(tools) if tools else None, tokenize=False,
            add_generation_prompt=generation, enable_thinking=self.enable_thinking,
        )

    def encode_multiturn(self, tokenizer, messages, system=None, tools=None, discard_history_thoughts=False):
        """(prompt, response) ids per turn; the Jinja decides about thoughts, so the flag is unused."""
        self._check_tools(tokenizer, messages, tools)
        chat = self._to_chat(messages, system)
        offset = 1 if system else 0
        pairs, done = [], ""
        for i in range(0, len(messages), 2):
            prompt_text = self._render(tokenizer, chat[: offset + i + 1], tools, True)
            full_text = self._render(tokenizer, chat[: offset + i + 2], tools, False)
            if not (prompt_text.startswith(done) and full_text.startswith(prompt_text)):
                raise TemplateError(
                    "The tokenizer's chat template does not keep earlier turns unchanged when a turn "
                    f"is added (turn {i // 2 + 1}), so labels cannot be derived from it. Set "
                    f"`template: {suggest_template(tokenizer)}` (a built-in template)."
                )
            pairs.append((
                tokenizer.encode(prompt_text[len(done):], add_special_tokens=False),
                tokenizer.encode(full_text[len(prompt_text):], add_special_tokens=False),
            ))
            done = full_text
        return pairs

    def encode_oneturn(self, tokenizer, messages, system=None, tools=None):
        """(prompt, response) ids: the generation prompt of all but the last message, and the rest."""
        self._check_tools(tokenizer, messages, tools)
        chat = self._to_chat(messages, system)
        prompt_text = self._render(tokenizer, chat[:-1], tools, True)
        full_text = self._render(tokenizer, chat, tools, False)
        if not full_text.startswith(prompt_text):
            raise TemplateError(
                "The tokenizer's chat template renders a conversation that does not start with its own "
                f"generation prompt, so labels cannot be derived from it. Set `template: "
                f"{suggest_template(tokenizer)}` (a built-in template)."
            )
        return (tokenizer.encode(prompt_text, add_special_tokens=False),
                tokenizer.encode(full_text[len(prompt_text):], add_special_tokens=False))

    def encode_prompt(self, tokenizer, messages, system=None, tools=None):
        self._check_tools(tokenizer, messages, tools)
        text = self._render(tokenizer, self._to_chat(messages, system), tools, True)
        return tokenizer.encode(text, add_special_tokens=False)

    def render(self, tokenizer, messages, system=None, tools=None) -> str:
        self._check_tools(tokenizer, messages, tools)
        return self._render(tokenizer, self._to_chat(messages, system), tools, False)


_FAMILY_MARKS = (("<|start_header_id|>", "llama3"), ("[INST]", "mistral"), ("<start_of_turn>", "gemma"),
                 ("[gMASK]", "glm4"), ("<|im_sep|>", "phi4"), ("<｜User｜>", "deepseek3"))


def suggest_template(tokenizer) -> str:
    """The built-in template name that fits a tokenizer's chat template (for error messages)."""
    text = getattr(tokenizer, "chat_template", None) or ""
    text = text if isinstance(text, str) else ""
    if "<|im_start|>" in text:
        return "qwen3 (or qwen3_nothink)" if "<think>" in text else "qwen"
    for mark, name in _FAMILY_MARKS:
        if mark in text:
            return name
    return "<the built-in template of your model family; see docs/templates.md>"


_CHATML_USER = ("<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",)
_CHATML_ASSISTANT = ("{{content}}<|im_end|>\n",)
_CHATML_SYSTEM = ("<|im_start|>system\n{{content}}<|im_end|>\n",)
_QWEN_OBSERVATION = (
    "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
)
_qwen = dict(user=_CHATML_USER, assistant=_CHATML_ASSISTANT, system=_CHATML_SYSTEM,
             observation=_QWEN_OBSERVATION, tool_format="qwen", stop_words=("<|im_end|>",),
             replace_eos=True)

TEMPLATES: dict[str, Template] = {t.name: t for t in [
    Template("empty", assistant=("{{content}}",)),
    Template(
        "default",
        user=("Human: {{content}}", EOS, "\nAssistant:"),
        assistant=("{{content}}", EOS, "\n"),
        system=("System: {{content}}", EOS, "\n"),
    ),
    Template(
        "alpaca",
        user=("### Instruction:\n{{content}}\n\n### Response:\n",),
        assistant=("{{content}}", EOS, "\n\n"),
        default_system=("Below is an instruction that describes a task. Write a response that "
                        "appropriately completes the request.\n\n"),
    ),
    Template(
        "chatml", user=_CHATML_USER, assistant=_CHATML_ASSISTANT, system=_CHATML_SYSTEM,
        observation=("<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n",),
        stop_words=("<|im_end|>", "<|im_start|>"), replace_eos=True,
    ),
    Template("qwen", default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
             **_qwen),
    Template("qwen3", reasoning=True, **_qwen),
    Template("qwen3_nothink", **_qwen),
    Template(
        "llama3",
        user=("<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",),
        assistant=("{{content}}<|eot_id|>",),
        system=("<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>",),
        observation=("<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n",),
        prefix=(BOS,), tool_format="llama3", stop_words=("<|eot_id|>", "<|eom_id|>"), replace_eos=True,
    ),
    Template(
        "llama2",
        user=(BOS, "[INST] {{content}} [/INST]"),
        system=("<<SYS>>\n{{content}}\n<</SYS>>\n\n",),
        fuse_system=True,
    ),
    Template(
        "mistral",
        user=("[INST] {{content}}[/INST]",),
        assistant=(" {{content}}", EOS),
        system=("{{content}}\n\n",),
        function=("[TOOL_CALLS] {{content}}", EOS),
        observation=('[TOOL_RESULTS] {"content": {{content}}}[/TOOL_RESULTS]',),
        prefix=(BOS,), tool_format="mistral", fuse_system=True,
    ),
    Template(
        "gemma",
        user=("<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n",),
        assistant=("{{content}}<end_of_turn>\n",),
        system=("{{content}}\n\n",),
        observation=("<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n",),
        prefix=(BOS,), stop_words=("<end_of_turn>",), replace_eos=True, fuse_system=True,
    ),
    Template("deepseek3", user=("<｜User｜>{{content}}<｜Assistant｜>",), prefix=(BOS,)),
    Template(
        "glm4",
        user=("<|user|>\n{{content}}<|assistant|>",),
        assistant=("\n{{content}}",),
        system=("<|system|>\n{{content}}",),
        function=("{{content}}",),
        observation=("<|observation|>\n{{content}}<|assistant|>",),
        prefix=("[gMASK]<sop>",), tool_format="glm4", stop_words=("<|user|>", "<|observation|>"),
        efficient_eos=True,
    ),
    Template(
        "phi4",
        user=("<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>",),
        assistant=("{{content}}<|im_end|>",),
        system=("<|im_start|>system<|im_sep|>{{content}}<|im_end|>",),
        stop_words=("<|im_end|>",), replace_eos=True,
    ),
]}


def get_template(name: str | None, tokenizer, *, default_system: str | None = None,
                 enable_thinking: bool | None = True, tool_format: str | None = None,
                 preserve_thinking: bool = False):
    """Resolve a template by name (or the tokenizer's Jinja template when None) and fix the
    tokenizer's EOS/pad/stop tokens to match it."""
    if name is None:
        template = JinjaTemplate(tokenizer, enable_thinking)
    else:
        if name not in TEMPLATES:
            import difflib

            close = difflib.get_close_matches(name, list(TEMPLATES), n=3)
            raise TemplateError(
                f"Unknown template {name!r}." + (f" Did you mean: {', '.join(close)}?" if close else "")
                + f" Available: {', '.join(sorted(TEMPLATES))}."
            )
        template = TEMPLATES[name]
        changes: dict[str, Any] = {"enable_thinking": enable_thinking, "preserve_thinking": preserve_thinking}
        if default_system is not None:
            changes["default_system"] = default_system
        if tool_format is not None:
            changes["tool_format"] = tool_format
        template = replace(template, **changes)
    template.fix_tokenizer(tokenizer)
    return template
