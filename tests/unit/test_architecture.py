"""The import direction of DESIGN.md section 1, read from the source (every import, at module level or
inside functions): cli/webui -> train/infer/eval/export/studio/datagen -> data/model -> config; no cycles;
train reaches eval and infer only through its orchestration module train/run.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "alignlab"
LAYERS = [{"cli", "webui"}, {"train", "infer", "eval", "export", "studio", "datagen"}, {"data", "model"}, {"config"}]
BASE = {"files", "errors"}  # below every layer: imports nothing of ours
ORCHESTRATION = {"alignlab.train.run"}  # the one train module allowed to call eval (predict) and model loading


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("alignlab", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        mods[name] = path
    return mods


def import_edges() -> dict[str, set[str]]:
    """module -> the alignlab modules it imports (resolved to the longest existing module name)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module or ""
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target.startswith("alignlab") and target != name and not name.startswith(target + "."):
                    edges[name].add(target)
    return edges


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int | None:
    top = _top(module)
    if top in BASE:
        return len(LAYERS)
    return next((i for i, layer in enumerate(LAYERS) if top in layer), None)


def test_no_module_imports_a_higher_layer():
    upward = [(a, b) for a, bs in import_edges().items() for b in bs
              if _layer(a) is not None and _layer(b) is not None and _layer(b) < _layer(a)]
    assert not upward, upward


def test_base_modules_import_nothing_of_ours():
    edges = import_edges()
    assert not {m: e for m, e in edges.items() if _top(m) in BASE and e}


def test_no_import_cycles_between_modules_or_packages():
    edges = import_edges()
    seen, on_path, cycles = set(), [], []

    def visit(node, graph):
        if node in on_path:
            cycles.append(on_path[on_path.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        on_path.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt, graph)
        on_path.pop()

    for module in sorted(edges):
        visit(module, edges)
    assert not cycles, cycles
    packages: dict[str, set[str]] = {}
    for a, bs in edges.items():
        packages.setdefault(_top(a), set()).update(_top(b) for b in bs if _top(b) != _top(a))
    for p in list(packages):
        for b in packages[p]:
            packages.setdefault(b, set())
    seen.clear()
    for package in sorted(packages):
        visit(package, packages)
    assert not cycles, cycles


def test_train_reaches_eval_and_infer_only_through_its_orchestration_module():
    crossing = {(a, b) for a, bs in import_edges().items() if _top(a) == "train" for b in bs
                if _top(b) in ("eval", "infer")}
    assert {a for a, _ in crossing} <= ORCHESTRATION, crossing


def test_stage_modules_and_losses_stay_small_and_pure():
    edges = import_edges()
    assert edges["alignlab.train.losses"] == set()  # torch only
    for path in (SRC / "train").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


def test_import_alignlab_stays_light():
    code = ("import sys, alignlab, alignlab.config, alignlab.cli; "
            "heavy = {'gradio', 'fastapi', 'vllm', 'deepspeed', 'bitsandbytes', 'torch'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
