"""`import alignlab` (and its data/train layers) must not pull in optional heavy packages."""

import subprocess
import sys


def test_no_heavy_imports():
    code = ("import sys, alignlab, alignlab.config, alignlab.data, alignlab.train, alignlab.model; "
            "print(','.join(m for m in ('gradio', 'fastapi', 'vllm', 'deepspeed', 'bitsandbytes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
