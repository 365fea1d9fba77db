"""The web UI's Stop (SIGTERM) in an online stage's loop: it saves checkpoint-N at the end of the step
and returns, without the final model or results (the run resumes from that checkpoint)."""

from __future__ import annotations

import os
import signal

from alignlab.config import load_config
from alignlab.train.online import OnlineRun
from tests.conftest import TINY, tiny_model


def test_sigterm_in_the_online_loop_saves_the_step_checkpoint_and_returns(tmp_path):
    from transformers import AutoTokenizer

    cfg = load_config([], with_training=True, defaults={
        "stage": "grpo", "output_dir": str(tmp_path), "max_steps": 10, "save_steps": 100, "logging_steps": 1,
        "per_device_train_batch_size": 1, "report_to": "none"})
    model = tiny_model()
    online = OnlineRun(cfg, model, list(model.parameters()), [{"prompt": str(i)} for i in range(8)])
    calls = []

    def rollout_and_learn(batch, indices):
        calls.append(len(batch))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what Stop sends, in the middle of step 2
        return {"loss": 1.0}

    assert online.train(rollout_and_learn, AutoTokenizer.from_pretrained(TINY)) == {"stopped_at_step": 2}
    assert len(calls) == 2 and (tmp_path / "checkpoint-2" / "online_state.pt").is_file()
    assert not (tmp_path / "all_results.json").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed afterwards
