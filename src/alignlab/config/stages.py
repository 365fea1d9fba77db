"""The registries: training stages, key groups, preference losses and advantage estimators.

Everything that names a stage, a loss or an estimator reads these tables: the `stage`,
`pref_loss` and `advantage_estimator` choices, the data-kind check, the CLI usage text, the
`--help` grouping, the web UI's widgets and the train dispatch. Adding a stage is one module under
`alignlab/train/` plus one `Stage` line here; adding a preference loss is one function in
`train/losses.py` plus one `PreferenceLoss` line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    data_kind: str  # the rows it trains on: pt (text), sft, pairwise, feedback (kto) or prompt (online RL)
    online: bool  # an explicit rollout -> score -> learn loop with its own checkpoints (not the HF Trainer)
    groups: tuple[str, ...]  # key groups it reads besides COMMON_GROUPS

    @property
    def module(self) -> str:
        return f"alignlab.train.{self.name}"


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("pt", "pre-training on raw text (packed)", "pt", False, ()),
    Stage("sft", "supervised fine-tuning on instructions or conversations", "sft", False, ("generation",)),
    Stage("rm", "reward model (value head) from chosen/rejected pairs", "pairwise", False, ("rm",)),
    Stage("dpo", "preference optimisation from pairs (DPO, IPO, hinge, kto_pair, bco_pair, ORPO, SimPO)",
          "pairwise", False, ("preference", "reference")),
    Stage("kto", "KTO from answers marked desirable or undesirable", "feedback", False, ("kto", "reference")),
    Stage("ppo", "PPO with a value head: rollouts scored by a reward model, API or functions", "prompt", True,
          ("rl", "ppo", "reward", "reference", "generation")),
    Stage("grpo", "critic-free RL (GRPO, RLOO, REINFORCE++): groups of rollouts per prompt", "prompt", True,
          ("rl", "grpo", "reward", "reference", "generation")),
)}
STAGE_NAMES = tuple(STAGES)

# Groups every stage reads; the others are read by the stages that list them.
COMMON_GROUPS = ("model", "method", "lora", "freeze", "data", "output", "train")
# Every group in `--help` order, with its title.
GROUP_TITLES = {
    "model": "model", "method": "method", "lora": "LoRA (finetuning_type: lora)",
    "freeze": "freeze (finetuning_type: freeze)", "data": "data", "rm": "reward model (stage rm)",
    "preference": "preference losses (stage dpo)", "kto": "KTO (stage kto)",
    "reference": "reference model (dpo, kto, ppo, grpo)", "rl": "online RL (ppo, grpo)", "ppo": "PPO",
    "grpo": "GRPO and other critic-free estimators", "reward": "reward source (ppo, grpo)",
    "generation": "generation (rollouts, predict, chat, api)", "output": "output and logging",
    "train": "Seq2SeqTrainingArguments", "infer": "inference and export",
    "eval": "evaluation and compare", "datagen": "data generation",
    "studio": "preference studio (candidates, annotation, pairs, RM gate)",
}
# Keys of Seq2SeqTrainingArguments shown under "output"; its other fields are "train".
OUTPUT_KEYS = frozenset({"output_dir", "logging_steps", "logging_strategy", "save_steps", "save_strategy",
                         "save_total_limit", "save_only_model", "report_to", "run_name", "logging_first_step"})


def stages_reading(group: str) -> tuple[str, ...]:
    """The stages that read the keys of `group` (none for keys of other commands)."""
    return tuple(s.name for s in STAGES.values() if group in COMMON_GROUPS or group in s.groups)


@dataclass(frozen=True)
class PreferenceLoss:
    name: str
    fn: str  # the function in alignlab.train.losses
    needs_reference: bool  # uses reference log-probs (precomputed once by default)
    length_averaged: bool  # defined on mean per-token log-probs instead of sums
    sft_term: bool = False  # has an SFT term of its own (then `pref_ftx` adds none)


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {p.name: p for p in (
    PreferenceLoss("sigmoid", "dpo_sigmoid_loss", True, False),
    PreferenceLoss("hinge", "dpo_hinge_loss", True, False),
    PreferenceLoss("ipo", "ipo_loss", True, True),
    PreferenceLoss("kto_pair", "kto_pair_loss", True, False),
    PreferenceLoss("bco_pair", "bco_pair_loss", True, False),
    PreferenceLoss("orpo", "orpo_loss", False, True, sft_term=True),
    PreferenceLoss("simpo", "simpo_loss", False, True),
)}
PREFERENCE_LOSS_NAMES = tuple(PREFERENCE_LOSSES)

# advantage_estimator -> the stage that runs it (gae needs the value head of stage ppo).
ADVANTAGE_ESTIMATORS = {"gae": "ppo", "grpo": "grpo", "rloo": "grpo", "reinforce_pp": "grpo"}
ADVANTAGE_ESTIMATOR_NAMES = tuple(ADVANTAGE_ESTIMATORS)


def advantage_estimator_of(stage: str, estimator: str | None) -> str:
    """The estimator a run uses: the one set, else its stage's default (ppo: gae, grpo: grpo)."""
    return estimator or ("gae" if stage == "ppo" else "grpo")
