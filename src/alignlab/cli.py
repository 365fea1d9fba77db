"""`alignlab <command>`: parse argv and dispatch. No logic of its own."""

from __future__ import annotations

import signal
import sys

USAGE = """usage: alignlab <command> [CONFIG.yaml] [key=value ...] [--key value ...]

commands:
  train          train a stage from a YAML config (stages below); FORCE_TORCHRUN=1 NPROC_PER_NODE=N for DDP
  chat           talk to a model in the terminal (history, streaming; `clear`, `exit`)
  api            serve an OpenAI-compatible API (env API_HOST, API_PORT, API_KEY, API_MODEL_NAME)
  webui          the training web UI on 127.0.0.1:7860 (--host, --port, --auth user:pass, --root-path, --runs-root)
  compare        the same prompts to several models: metrics, reward, judge win rate, report.md + report.html
  export         merge adapters and write a servable folder: chat_template.jinja from the training template, Modelfile
  eval           multiple-choice benchmark (MMLU/C-Eval/CMMLU layout): per-subject and average accuracy
  eval loadtest  HTTP load test of a chat-completions endpoint: req/s, tokens/s, latency percentiles
  data preview   show encoded examples (ids, labels, rendered text); --num N, --json
  data validate  check every row of the datasets (preference pairs too); --all for every registry entry
  data synth     questions from templates and variable pools per category (seeded, de-duplicated, split)
  data generate  answers for a prompt dataset from an OpenAI-compatible endpoint (limit, retries, resume, cost)
  data judge     answers -> preference pairs by an LLM judge with a rubric (judge_mode improve or pairwise)
  data candidates  k answers per prompt from your own model(s) for people to rank (num_candidates, output_dir)
  data pairs     the studio's rankings -> a registered preference dataset (studio_dir, pair_mode, register_as)
  env            versions of python, torch, transformers, peft, accelerate, datasets; the device
  version        the alignlab version

Every command takes the config keys of `alignlab <command> --help`; `alignlab train --help stage=dpo`
lists only the keys a stage reads.
"""


def _usage() -> str:
    from .config.stages import STAGES

    width = max(map(len, STAGES))
    return USAGE + "\nstages:\n" + "\n".join(f"  {s.name:<{width}}  {s.summary}" for s in STAGES.values())


def _pop_option(argv: list[str], name: str, has_value: bool):
    if name not in argv:
        return None
    i = argv.index(name)
    value = argv[i + 1] if has_value and i + 1 < len(argv) else True
    del argv[i: i + (2 if has_value else 1)]
    return value


def _data(argv: list[str]) -> int:
    from .config import help_text, load_config
    from .data.inspect import format_preview, names_of, preview, validate

    actions = ("preview", "validate", "synth", "generate", "judge", "candidates", "pairs")
    if not argv or argv[0] not in actions:
        print(f"usage: alignlab data {{{','.join(actions)}}} [CONFIG] [key=value ...]", file=sys.stderr)
        return 2
    action, rest = argv[0], list(argv[1:])
    if "--help" in rest or "-h" in rest:
        print(f"alignlab data {action}: takes the training keys.\n" + help_text(with_training=False))
        return 0
    if action == "synth":
        from .datagen.synth import run_synth

        run_synth(load_config(rest))
        return 0
    if action == "generate":
        from .datagen.generate import run_generate

        run_generate(load_config(rest))
        return 0
    if action == "judge":
        from .datagen.judge import run_judge

        run_judge(load_config(rest))
        return 0
    if action == "candidates":
        from .studio.candidates import run_candidates

        run_candidates(load_config(rest))
        return 0
    if action == "pairs":
        from .studio.project import run_pairs

        run_pairs(load_config(rest))
        return 0
    if action == "preview":
        num = int(_pop_option(rest, "--num", True) or 3)
        as_json = bool(_pop_option(rest, "--json", False))
        cfg = load_config(rest)
        from .data import get_template
        from .model import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
        template = get_template(cfg.data.template, tokenizer, default_system=cfg.data.default_system,
                                enable_thinking=cfg.data.enable_thinking, tool_format=cfg.data.tool_format,
                                preserve_thinking=cfg.data.preserve_thinking)
        print(format_preview(preview(cfg, tokenizer, template, num), as_json))
        return 0
    check_all = bool(_pop_option(rest, "--all", False))
    cfg = load_config(rest)
    names = None if check_all else names_of(",".join(filter(None, [cfg.data.dataset, cfg.data.eval_dataset])))
    if names is None and not check_all:
        print("alignlab data validate: give `dataset=...` or --all", file=sys.stderr)
        return 2
    stage = cfg.resolved.get("stage")
    report, ok = validate(cfg.data, names, stage)
    print(report)
    return 0 if ok else 1


def _torchrun_command(argv: list[str]) -> list[str] | None:
    """LLaMA-Factory's launcher variables: relaunch through torchrun when asked (or several GPUs)."""
    import os

    if "LOCAL_RANK" in os.environ:
        return None
    nproc = os.environ.get("NPROC_PER_NODE")
    if nproc is None:
        import torch

        nproc = str(max(torch.cuda.device_count(), 1))
    force = os.environ.get("FORCE_TORCHRUN", "0").lower() in ("1", "true", "yes")
    nnodes = os.environ.get("NNODES", "1")
    if not force and int(nproc) <= 1 and nnodes == "1":
        return None
    import random

    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
            f"--node_rank={os.environ.get('NODE_RANK', '0')}", f"--nproc_per_node={nproc}",
            f"--master_addr={os.environ.get('MASTER_ADDR', '127.0.0.1')}",
            f"--master_port={os.environ.get('MASTER_PORT', str(random.randint(20001, 29999)))}",
            "-m", "alignlab.cli", "train", *argv]


def _train(argv: list[str]) -> int:
    from .config import help_text, load_config

    if "--help" in argv or "-h" in argv:
        from .config.parser import split_argv

        _path, given = split_argv([a for a in argv if a not in ("--help", "-h")])
        print("alignlab train CONFIG.yaml [key=value ...] [--key value ...]\n" + help_text(stage=given.get("stage")))
        return 0
    command = _torchrun_command(argv)
    if command:
        import subprocess

        return subprocess.run(command).returncode
    cfg = load_config(argv, with_training=True)
    from .train import run_train

    run_train(cfg)
    return 0


def _serve(command: str, argv: list[str]) -> int:
    """`chat`, `api` and `export`: the model keys plus generating keys, no training arguments."""
    from .config import help_text, load_config

    if "--help" in argv or "-h" in argv:
        print(f"alignlab {command} CONFIG.yaml [key=value ...]\n" + help_text(with_training=False))
        return 0
    cfg = load_config(argv)
    if not cfg.model.model_name_or_path:
        from .config import ConfigError

        raise ConfigError(f"`alignlab {command}` needs `model_name_or_path` (and `adapter_name_or_path` for "
                          "a LoRA run), e.g. examples/inference/qwen3_lora_sft.yaml.")
    if command == "chat":
        from .infer.chat import run_chat

        run_chat(cfg)
    elif command == "export":
        from .export import run_export

        print(f"Exported to {run_export(cfg)}")
    else:
        from .infer.api import run_api

        run_api(cfg)
    return 0


def _eval(argv: list[str]) -> int:
    """`alignlab eval CFG` (multiple-choice benchmark) or `alignlab eval loadtest ...`."""
    if argv and argv[0] == "loadtest":
        from .eval.loadtest import main as loadtest

        return loadtest(argv[1:])
    from .config import help_text, load_config

    if not argv or "--help" in argv or "-h" in argv:
        print("alignlab eval CONFIG.yaml [key=value ...]   multiple-choice benchmark (task, task_dir, n_shot, lang)\n"
              "alignlab eval loadtest --url URL --concurrency 1,4,16 --requests N\n" + help_text(with_training=False))
        return 0 if argv else 2
    from .eval.mcq import format_results, run_eval

    results = run_eval(load_config(argv))
    print(format_results(results))
    print(f"results: {results['results_file']}")
    return 0


def _compare(argv: list[str]) -> int:
    from .config import help_text

    if not argv or "--help" in argv or "-h" in argv:
        print("alignlab compare CONFIG.yaml [key=value ...]   (compare_models, eval_dataset, reward_model, "
              "judge_api_base, compare_dir)\n" + help_text(with_training=False))
        return 0 if argv else 2
    from .eval.compare import run_compare

    print(f"report: {run_compare(argv)}")
    return 0


def _setup_logging() -> None:
    import logging

    logging.basicConfig(format="[%(asctime)s] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.WARNING)
    logging.getLogger("alignlab").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    if argv is None and hasattr(signal, "SIGPIPE"):  # the console command: `alignlab ... | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    _setup_logging()
    from .errors import UserError

    try:
        if command == "version":
            from . import __version__

            print(__version__)
            return 0
        if command == "env":
            from .env import env_report

            print(env_report())
            return 0
        if command == "data":
            return _data(rest)
        if command == "train":
            return _train(rest)
        if command == "webui":
            from .webui.serve import main as webui

            return webui(rest)
        if command in ("chat", "api", "export"):
            return _serve(command, rest)
        if command == "eval":
            return _eval(rest)
        if command == "compare":
            return _compare(rest)
    except (UserError, NotImplementedError) as e:
        print(f"\nalignlab {command}: {e}", file=sys.stderr)
        return 1
    print(f"alignlab: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
