"""`alignlab env`: versions and the device, for bug reports."""

from __future__ import annotations

import importlib.metadata
import os
import platform


def env_report() -> str:
    import torch

    lines = [f"alignlab: {importlib.metadata.version('alignlab')}",
             f"python: {platform.python_version()}", f"platform: {platform.platform()}"]
    for package in ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers"):
        try:
            lines.append(f"{package}: {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"{package}: not installed")
    for package in ("vllm", "deepspeed", "bitsandbytes", "flash-attn", "liger-kernel", "gradio"):
        try:
            lines.append(f"{package}: {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        lines.append(f"device: cuda x{torch.cuda.device_count()} ({', '.join(sorted(names))})")
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        lines.append("device: mps")
    else:
        lines.append(f"device: cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    return "\n".join(lines)
