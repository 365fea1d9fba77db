"""Tool (function-calling) formats: the system text describing tools, and assistant tool calls.

Formats follow LLaMA-Factory's `tool_format` names: default, qwen, llama3, glm4, mistral.
"""

from __future__ import annotations

import json
from typing import Any

from ..config import ConfigError
from .registry import DataError

DEFAULT_TOOL_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n'
    "```\n"
)
QWEN_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
LLAMA3_TOOL_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON "
    'for a function call. Respond in the format {{"name": function name, "parameters": '
    'dictionary of argument name and its value}}. Do not use variables.\n\n{tool_text}'
)
GLM4_TOOL_PROMPT = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具{tool_text}"
)
TOOL_FORMATS = ("default", "qwen", "llama3", "glm4", "mistral")


def _unwrap(tool: dict) -> dict:
    return tool.get("function", {}) if tool.get("type") == "function" else tool


def _wrap(tool: dict) -> dict:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


def parse_tools(tools: Any) -> list[dict]:
    """Tools arrive as a JSON string (LLaMA-Factory data) or a list; return the list."""
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else []
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise DataError("tools must be a JSON list of objects")
    return tools


def format_tools(tool_format: str, tools: list[dict], date: str = "26 Jul 2024") -> str:
    """The text appended to the system message that describes the available tools."""
    if not tools:
        return ""
    if tool_format == "default":
        tool_text, names = "", []
        for tool in map(_unwrap, tools):
            params = tool.get("parameters", {})
            param_text = ""
            for name, param in params.get("properties", {}).items():
                required = ", required" if name in params.get("required", []) else ""
                enum = ", should be one of [{}]".format(", ".join(param["enum"])) if param.get("enum") else ""
                items = (", where each item should be {}".format(param["items"].get("type", ""))
                         if param.get("items") else "")
                param_text += (f"  - {name} ({param.get('type', '')}{required}): "
                               f"{param.get('description', '')}{enum}{items}\n")
            tool_text += (f"> Tool Name: {tool['name']}\nTool Description: "
                          f"{tool.get('description', '')}\nTool Args:\n{param_text}\n")
            names.append(tool["name"])
        return DEFAULT_TOOL_PROMPT.format(tool_text=tool_text, tool_names=", ".join(names))
    if tool_format == "qwen":
        text = "".join("\n" + json.dumps(_wrap(t), ensure_ascii=False) for t in tools)
        return QWEN_TOOL_PROMPT.format(tool_text=text)
    if tool_format == "llama3":
        text = "".join(json.dumps(_wrap(t), indent=4, ensure_ascii=False) + "\n\n" for t in tools)
        return LLAMA3_TOOL_PROMPT.format(date=date, tool_text=text)
    if tool_format == "glm4":
        text = "".join(
            f"\n\n## {t['name']}\n\n{json.dumps(t, indent=4, ensure_ascii=False)}\n"
            "在调用上述函数时，请使用 Json 格式表示调用的参数。"
            for t in map(_unwrap, tools)
        )
        return GLM4_TOOL_PROMPT.format(tool_text=text)
    if tool_format == "mistral":
        return "[AVAILABLE_TOOLS] " + json.dumps([_wrap(t) for t in tools], ensure_ascii=False) + "[/AVAILABLE_TOOLS]"
    raise ConfigError(f"Unknown tool_format {tool_format!r}; choose one of {', '.join(TOOL_FORMATS)}.")


def parse_function_calls(content: str) -> list[tuple[str, str]]:
    """A function-role message holds one call or a list: {"name": ..., "arguments": ...}."""
    calls = json.loads(content)
    calls = calls if isinstance(calls, list) else [calls]
    result = []
    for call in calls:
        args = call["arguments"]
        result.append((call["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)))
    return result


def format_function_calls(tool_format: str, calls: list[tuple[str, str]]) -> str:
    """Render tool calls as the assistant writes them in the given format."""
    if tool_format == "default":
        return "\n".join(f"Action: {name}\nAction Input: {args}" for name, args in calls)
    if tool_format == "qwen":
        return "\n".join(
            "<tool_call>\n" + json.dumps({"name": n, "arguments": json.loads(a)}, ensure_ascii=False)
            + "\n</tool_call>" for n, a in calls
        )
    if tool_format == "llama3":
        objs = [{"name": n, "parameters": json.loads(a)} for n, a in calls]
        return json.dumps(objs[0] if len(objs) == 1 else objs, ensure_ascii=False)
    if tool_format == "glm4":
        if len(calls) > 1:
            raise DataError("GLM-4 does not support parallel function calls: split them into separate turns.")
        return f"{calls[0][0]}\n{calls[0][1]}"
    if tool_format == "mistral":
        return json.dumps([{"name": n, "arguments": json.loads(a)} for n, a in calls], ensure_ascii=False)
    raise ConfigError(f"Unknown tool_format {tool_format!r}; choose one of {', '.join(TOOL_FORMATS)}.")


def _json_calls(text: str, args_key: str) -> list[tuple[str, str]] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    objs = value if isinstance(value, list) else [value]
    if not objs or not all(isinstance(o, dict) and isinstance(o.get("name"), str) and args_key in o for o in objs):
        return None
    return [(o["name"], json.dumps(o[args_key], ensure_ascii=False)) for o in objs]


def extract_function_calls(tool_format: str, text: str) -> list[tuple[str, str]] | None:
    """The (name, JSON arguments) calls in a generated answer, or None when it calls no tool."""
    import re

    text = text.strip()
    if tool_format == "qwen":
        found = re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, flags=re.DOTALL)
        calls = [_json_calls(f, "arguments") for f in found]
        return [c for group in calls for c in group] if found and all(calls) else None
    if tool_format == "default":
        found = re.findall(r"Action:\s*(.+?)\s*Action Input:\s*(.+?)(?=\s*Action:|\Z)", text, flags=re.DOTALL)
        calls = []
        for name, args in found:
            args = args.strip().strip("`").strip()
            try:
                calls.append((name.strip(), json.dumps(json.loads(args), ensure_ascii=False)))
            except ValueError:
                return None
        return calls or None
    if tool_format == "llama3":
        return _json_calls(text, "parameters")
    if tool_format == "mistral":
        return _json_calls(text.removeprefix("[TOOL_CALLS]").strip(), "arguments")
    if tool_format == "glm4":
        name, _, args = text.partition("\n")
        try:
            return [(name.strip(), json.dumps(json.loads(args), ensure_ascii=False))] if name.strip() and args else None
        except ValueError:
            return None
    raise ConfigError(f"Unknown tool_format {tool_format!r}; choose one of {', '.join(TOOL_FORMATS)}.")
