"""Build the virtual environments of the peer tools we compare against, outside the repo.

Each peer gets its own venv under the user cache folder (`$XDG_CACHE_HOME` or `~/.cache`)
`alignlab-peers/<name>`, never `.venv`: LLaMA-Factory and TRL pin versions of transformers,
datasets and peft that differ from ours. torch is installed first at a fixed version and held
there with a pip constraint, so a peer's dependencies cannot pull another (multi-GB) torch build.
A stamp file records what was installed; running again with the same spec does nothing.

The registry's torchvision/torchaudio wheels are CUDA builds that cannot load beside the CPU torch
(`libc10_cuda.so` missing). A peer that pulls them gets them removed; LLaMA-Factory imports
torchaudio at start-up (for audio data only), so its venv gets a stub `torchaudio` whose every
attribute raises ImportError: text data, all we compare, works; audio data says why it cannot.

    python scripts/peer_venvs.py llamafactory        # build if needed, print its python
    python scripts/peer_venvs.py trl --check         # print its python if built, else exit 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TORCH = "torch==2.13.0"
PEERS = {
    "llamafactory": ["llamafactory==0.9.5"],
    "trl": ["trl==1.16.*", "peft==0.21.2"],  # the peft of alignlab's venv: the same LoRA layers
}


def peers_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "alignlab-peers"


RECIPE = 2  # bump when the build steps change
TORCHAUDIO_STUB = '''"""Stub installed by alignlab's scripts/peer_venvs.py: the real torchaudio wheel needs CUDA torch."""

__version__ = "0+alignlab.stub"


def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: torchaudio is a stub in this CPU-only peer venv (audio data unsupported)")
'''


def spec(name: str) -> dict:
    """What a built venv must hold; the stamp stores it so a changed spec rebuilds."""
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "torch": TORCH,
            "packages": PEERS[name], "recipe": RECIPE}


def python_of(name: str) -> Path:
    return peers_root() / name / "bin" / "python"


def is_built(name: str) -> bool:
    stamp = peers_root() / name / ".alignlab-peer-stamp"
    try:
        return json.loads(stamp.read_text()) == spec(name) and python_of(name).is_file()
    except (OSError, ValueError):
        return False


def build(name: str) -> Path:
    """Create (or re-create) the venv of `name` and return its python."""
    if is_built(name):
        return python_of(name)
    target = peers_root() / name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(target)], check=True)
    pip = [str(python_of(name)), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(TORCH + "\n")
        constraint = f.name
    try:
        subprocess.run([*pip, "-c", constraint, *PEERS[name]], check=True)
    finally:
        os.unlink(constraint)
    python = str(python_of(name))
    for module in ("torchvision", "torchaudio"):
        present = subprocess.run([python, "-c", f"import importlib.util as u; exit(u.find_spec('{module}') is None)"])
        if present.returncode == 0 and subprocess.run([python, "-c", f"import {module}"],
                                                      capture_output=True).returncode != 0:
            subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", module], check=True)
            if module == "torchaudio" and name == "llamafactory":
                site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                      capture_output=True, text=True, check=True).stdout.strip()
                Path(site, "torchaudio").mkdir(exist_ok=True)
                Path(site, "torchaudio", "__init__.py").write_text(TORCHAUDIO_STUB)
    (target / ".alignlab-peer-stamp").write_text(json.dumps(spec(name)))
    return python_of(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(PEERS))
    parser.add_argument("--check", action="store_true", help="only report; build nothing")
    args = parser.parse_args(argv)
    if args.check:
        if not is_built(args.name):
            print(f"peer venv {args.name!r} is not built: run `python scripts/peer_venvs.py {args.name}`",
                  file=sys.stderr)
            return 1
        print(python_of(args.name))
        return 0
    print(build(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
