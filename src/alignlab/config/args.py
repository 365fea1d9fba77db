"""Typed argument groups with LLaMA-Factory's key names and defaults.

Every key a user may write in a YAML file lives in exactly one of these dataclasses or in
`transformers.Seq2SeqTrainingArguments`. Keys that are ours (not LLaMA-Factory's) say so in
their help text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from .stages import ADVANTAGE_ESTIMATOR_NAMES, PREFERENCE_LOSS_NAMES, STAGE_NAMES


def _key(default, help: str, group: str | None = None, stages: tuple[str, ...] | None = None,  # noqa: A002
         **kw):
    """A config key: its default, help text, key group (default: the class's GROUP) and, where it is not
    every stage reading the group, the stages that read it."""
    meta = {"help": help, **kw}
    if group:
        meta["group"] = group
    if stages:
        meta["stages"] = stages
    return field(default=default, metadata=meta)


@dataclass
class ModelArguments:
    GROUP: ClassVar[str] = "model"

    model_name_or_path: str | None = _key(None, "Path to a Hugging Face model folder.")
    adapter_name_or_path: str | None = _key(
        None, "Path(s) to LoRA adapters, comma separated; stacked in order."
    )
    trust_remote_code: bool = _key(False, "Allow custom modelling code from the model folder.")
    use_fast_tokenizer: bool = _key(True, "Use the fast (Rust) tokenizer.")
    resize_vocab: bool = _key(False, "Resize the embeddings to the tokenizer's vocabulary size.")
    split_special_tokens: bool = _key(False, "Split special tokens while tokenizing.")
    new_special_tokens: str | None = _key(None, "Special tokens to add, comma separated.")
    model_revision: str = _key("main", "Model version (branch, tag or commit).")
    low_cpu_mem_usage: bool = _key(True, "Load the model with low CPU memory usage.")
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = _key(
        None, "RoPE scaling strategy for a longer context."
    )
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = _key(
        "auto", "Attention implementation: auto, disabled (eager), sdpa or fa2."
    )
    enable_liger_kernel: bool = _key(False, "Patch the model with Liger kernels when installed.")
    disable_gradient_checkpointing: bool = _key(False, "Turn off gradient checkpointing.")
    upcast_layernorm: bool = _key(False, "Keep layer-norm weights in float32 while training.")
    upcast_lmhead_output: bool = _key(False, "Compute the LM head output (logits) in float32.")
    train_from_scratch: bool = _key(False, "Initialise the weights randomly from the config.")
    quantization_method: Literal["bnb"] = _key("bnb", "Quantisation backend (bitsandbytes).")
    quantization_bit: int | None = _key(None, "Quantise the base model to 4 or 8 bits (QLoRA).")
    quantization_type: Literal["fp4", "nf4"] = _key("nf4", "4-bit quantisation data type.")
    double_quantization: bool = _key(True, "Double quantisation for 4-bit.")
    infer_backend: Literal["huggingface", "vllm"] = _key(
        "huggingface", "Inference engine: huggingface or vllm.", group="infer")
    infer_dtype: Literal["auto", "float16", "bfloat16", "float32"] = _key(
        "auto", "Model dtype for inference and export.", group="infer")
    infer_max_batch: int = _key(
        32, "huggingface engine (ours): most sequences decoded together (chat, api, compare, predict). More "
        "concurrent requests (each of the n answers counts) wait in a first-come-first-served queue and join as "
        "answers finish: higher raises throughput under load and memory (one KV cache per sequence), lower "
        "shortens each decode step.", group="infer")
    vllm_maxlen: int = _key(4096, "Maximum sequence length of the vLLM engine.", group="infer")
    vllm_gpu_util: float = _key(0.7, "GPU memory share for the vLLM engine.", group="infer")
    vllm_enforce_eager: bool = _key(False, "Disable CUDA graphs in vLLM.", group="infer")
    export_dir: str | None = _key(None, "Folder to write the exported model to.", group="infer")
    export_size: float = _key(5, "Shard size of the exported model in GB.", group="infer")
    export_device: Literal["cpu", "auto"] = _key(
        "cpu", "Device used to merge for export.", no_effect="adapters are merged where the model loads", group="infer")
    export_legacy_format: bool = _key(False, "Save .bin instead of .safetensors.", group="infer")
    print_param_status: bool = _key(False, "Print every parameter's dtype and trainability.")


@dataclass
class DataArguments:
    GROUP: ClassVar[str] = "data"

    template: str | None = _key(
        None, "Chat template name; unset = use the tokenizer's own Jinja chat template."
    )
    dataset: str | None = _key(None, "Training dataset names from dataset_info.json, comma separated.")
    eval_dataset: str | None = _key(None, "Evaluation dataset names, comma separated.")
    dataset_dir: str = _key("data", "Folder holding dataset_info.json and the data files.")
    cutoff_len: int = _key(2048, "Maximum tokens per example after tokenisation.")
    train_on_prompt: bool = _key(False, "Compute the loss on prompt tokens too.")
    mask_history: bool = _key(False, "Train on the last turn only.")
    streaming: bool = _key(False, "Stream the dataset.", no_effect="local data is tokenised once into a cache "
                           "(`tokenized_path`, `overwrite_cache`), so there is nothing to stream")
    buffer_size: int = _key(16384, "Buffer size for streaming shuffles.", no_effect="used only with `streaming`")
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = _key(
        "concat", "How several datasets are mixed."
    )
    interleave_probs: str | None = _key(None, "Sampling probabilities for interleaving, comma separated.")
    overwrite_cache: bool = _key(False, "Rebuild the tokenised data cache.")
    preprocessing_batch_size: int = _key(1000, "Examples per preprocessing batch.")
    preprocessing_num_workers: int | None = _key(None, "Processes used for tokenisation.")
    max_samples: int | None = _key(None, "Keep at most this many examples per dataset.")
    eval_num_beams: int | None = _key(None, "Beams for sft predict (`do_predict`); overrides num_beams there.", group="generation", stages=('sft',))
    ignore_pad_token_for_loss: bool = _key(True, "Ignore padding tokens in the loss.",
                                           no_effect="padding is always left out of the loss")
    val_size: float = _key(0.0, "Validation split: a fraction in (0,1) or a count of examples.")
    eval_on_each_dataset: bool = _key(False, "Evaluate each eval dataset separately.",
                                      no_effect="the eval datasets are evaluated together")
    packing: bool | None = _key(None, "Pack several examples into one sequence (pt: on by default).")
    neat_packing: bool = _key(False, "Packing where packed examples cannot attend to each other.")
    tool_format: str | None = _key(None, "Tool format override: default, qwen, llama3, glm4, mistral.")
    default_system: str | None = _key(None, "Override the template's default system message.")
    enable_thinking: bool | None = _key(True, "Reasoning templates: train/generate the think block.")
    preserve_thinking: bool = _key(False, "Reasoning templates: keep the thoughts of history turns in prompts.")
    tokenized_path: str | None = _key(None, "Save tokenised data here, or load it if present.")
    data_shared_file_system: bool = _key(False, "Datasets live on a file system shared by nodes.",
                                         no_effect="each node's main process prepares the data")


@dataclass
class FinetuningArguments:
    GROUP: ClassVar[str] = "method"

    stage: Literal[STAGE_NAMES] = _key("sft", "Training stage (config/stages.py lists them).", group="method")
    finetuning_type: Literal["lora", "freeze", "full"] = _key("lora", "Which parameters train.", group="method")
    pure_bf16: bool = _key(False, "Train in pure bfloat16 (no float32 master weights).", group="method")
    freeze_trainable_layers: int = _key(
        2, "Freeze: number of trainable layers, last ones (positive) or first ones (negative).", group="freeze")
    freeze_trainable_modules: str = _key(
        "all", "Freeze: trainable module names inside the chosen layers, comma separated.", group="freeze")
    freeze_extra_modules: str | None = _key(
        None, "Freeze: extra trainable modules outside the layers (e.g. embed_tokens).", group="freeze")
    additional_target: str | None = _key(
        None, "LoRA: modules trained fully and saved with the adapter, comma separated.", group="lora")
    lora_rank: int = _key(8, "LoRA rank.", group="lora")
    lora_alpha: int | None = _key(None, "LoRA scale; default 2 x lora_rank.", group="lora")
    lora_dropout: float = _key(0.0, "LoRA dropout.", group="lora")
    lora_target: str = _key("all", "LoRA target modules, comma separated; all = every linear layer.", group="lora")
    loraplus_lr_ratio: float | None = _key(None, "LoRA+: learning-rate ratio of B over A.", group="lora")
    loraplus_lr_embedding: float = _key(1e-6, "LoRA+: learning rate of embedding adapters.", group="lora")
    use_rslora: bool = _key(False, "Rank-stabilised LoRA scaling.", group="lora")
    use_dora: bool = _key(False, "Weight-decomposed LoRA (DoRA).", group="lora")
    pissa_init: bool = _key(False, "Initialise LoRA with PiSSA.", group="lora")
    pissa_iter: int = _key(16, "PiSSA fast-SVD iterations; -1 = full SVD.", group="lora")
    pissa_convert: bool = _key(False, "Convert a PiSSA adapter to a plain LoRA on save.",
                               no_effect="the PiSSA adapter is saved as trained (load it with its base)", group="lora")
    create_new_adapter: bool = _key(False, "Train a new adapter on top of the loaded ones.", group="lora")
    pref_beta: float = _key(0.1, "Preference losses: beta.", group="preference")
    pref_ftx: float = _key(0.0, "Preference losses: weight of the SFT term.", group="preference")
    pref_loss: Literal[PREFERENCE_LOSS_NAMES] = _key(
        "sigmoid", "DPO-family loss: sigmoid (DPO), hinge, ipo, kto_pair, bco_pair (ours: BCO with a running "
        "reward mean, as TRL), orpo, simpo.", group="preference")
    dpo_label_smoothing: float = _key(0.0, "Robust DPO label smoothing in [0, 0.5].", group="preference")
    kto_chosen_weight: float = _key(1.0, "KTO: weight of desirable examples.", group="kto")
    kto_rejected_weight: float = _key(1.0, "KTO: weight of undesirable examples.", group="kto")
    simpo_gamma: float = _key(0.5, "SimPO: target reward margin.", group="preference")
    ld_alpha: float | None = _key(None, "LD-DPO: weight of verbose tokens.", group="preference")
    ppo_buffer_size: int = _key(1, "PPO: mini-batches per rollout batch.", group="rl")
    ppo_epochs: int = _key(4, "PPO: optimisation epochs per rollout batch.", group="rl")
    ppo_score_norm: bool = _key(False, "PPO: normalise scores.", group="ppo")
    ppo_target: float = _key(6.0, "PPO: target KL for adaptive control.", group="ppo")
    ppo_whiten_rewards: bool = _key(False, "PPO: whiten rewards before GAE.", group="ppo")
    ppo_kl_coef: float = _key(0.05, "ppo (ours): initial coefficient of the per-token KL penalty.", group="ppo")
    ppo_adaptive_kl: bool = _key(True, "ppo (ours): adapt ppo_kl_coef towards the KL target ppo_target.", group="ppo")
    ppo_gamma: float = _key(1.0, "ppo (ours): discount of GAE.", group="rl")
    ppo_lam: float = _key(0.95, "ppo (ours): lambda of GAE.", group="ppo")
    ppo_cliprange: float = _key(0.2, "ppo/grpo (ours): policy ratio clip range.", group="rl")
    ppo_cliprange_value: float = _key(0.2, "ppo (ours): value clip range.", group="ppo")
    ppo_vf_coef: float = _key(0.1, "ppo (ours): weight of the value loss.", group="ppo")
    advantage_estimator: Literal[ADVANTAGE_ESTIMATOR_NAMES] | None = _key(
        None, "ppo/grpo (ours): gae (stage ppo, with the value head; its default), grpo (group-normalised; "
        "stage grpo's default), rloo (leave-one-out baseline) or reinforce_pp (REINFORCE++: per-token KL "
        "penalty in the reward, batch-whitened returns); the last three run under stage grpo.", group="rl")
    grpo_group_size: int = _key(4, "grpo (ours): samples per prompt.", group="grpo")
    grpo_beta: float = _key(0.04, "grpo (ours): weight of the KL penalty to the reference (k3 in the loss; "
                            "reinforce_pp: per-token in the reward).", group="grpo")
    reward_funcs: str | None = _key(
        None, "ppo/grpo (ours): reward functions, comma separated `name` or `module:function`, each "
        "optionally `=weight`; built-ins exact_label, regex_format, length_penalty.", group="reward")
    answer_regex: str | None = _key(
        None, "ppo/grpo (ours): exact_label: a regular expression whose captured group is the answer compared "
        "with the row's `label` (default: \\boxed{...}, else 'answer: ...').", group="reward")
    reward_regex: str | None = _key(None, "ppo/grpo (ours): the pattern the regex_format reward looks for.", group="reward")
    ref_model: str | None = _key(None, "Reference model path for DPO/KTO/PPO.", group="reference")
    ref_model_adapters: str | None = _key(None, "Adapters of the reference model.", group="reference")
    ref_model_quantization_bit: int | None = _key(None, "Quantise the reference model.", group="reference")
    reward_model: str | None = _key(None, "Reward model path (or API URL) for PPO.", group="reward")
    reward_model_adapters: str | None = _key(None, "Adapters of the reward model.", group="reward")
    reward_model_quantization_bit: int | None = _key(None, "Quantise the reward model.", group="reward")
    reward_model_type: Literal["lora", "full", "api"] = _key("lora", "Reward model kind for PPO.", group="reward")
    precompute_ref_logps: bool = _key(
        True, "dpo/kto (ours): compute the reference log-probs once before training, not every step.", group="reference", stages=('dpo', 'kto'))
    rm_min_accuracy: float = _key(
        0.85, "rm (ours): held-out pair accuracy below which the reward model is reported not ready.", group="rm")
    eval_metrics: str | None = _key(
        None, "sft predict (ours): extra metrics besides BLEU/ROUGE/exact match, comma separated: "
        "`classification` and/or `module:function` taking (predicts, labels) and returning a dict.", group="generation", stages=('sft',))
    plot_loss: bool = _key(False, "Save loss curves as PNG in output_dir.", group="output")
    overwrite_output_dir: bool = _key(
        False, "Start afresh even if output_dir holds checkpoints (dropped by transformers 5; kept).", group="output")
    compute_accuracy: bool = _key(False, "SFT eval: compute token accuracy.", group="train")
    disable_shuffling: bool = _key(False, "Keep the training data in order.", group="train")
    early_stopping_steps: int | None = _key(
        None, "Stop when `metric_for_best_model` has not improved for this many evaluations.", group="train")
    include_effective_tokens_per_second: bool = _key(
        False, "Report effective_tokens_per_sec: trained tokens (no padding) x epochs / train runtime.", group="train")


@dataclass
class GeneratingArguments:
    GROUP: ClassVar[str] = "generation"

    do_sample: bool = _key(True, "Sample instead of greedy decoding.")
    temperature: float = _key(0.95, "Sampling temperature.")
    top_p: float = _key(0.7, "Nucleus sampling mass.")
    top_k: int = _key(50, "Sample from the k most likely tokens.")
    num_beams: int = _key(1, "Beam search width for sft predict; 1 = no beam search (chat and api refuse > 1).")
    max_length: int = _key(1024, "Maximum total length (ignored when max_new_tokens is set).")
    max_new_tokens: int = _key(1024, "Maximum generated tokens.")
    repetition_penalty: float = _key(1.0, "Repetition penalty; 1.0 = none.")
    length_penalty: float = _key(1.0, "Beam search length penalty.")
    skip_special_tokens: bool = _key(True, "Drop special tokens when decoding.")


@dataclass
class EvaluationArguments:
    GROUP: ClassVar[str] = "eval"

    task: str | None = _key(None, "eval: benchmark folder under task_dir, with the split after `_` (e.g. mmlu_test).")
    task_dir: str = _key("evaluation", "eval: folder holding the benchmark folders.")
    batch_size: int = _key(4, "eval: prompts scored per forward pass.")
    lang: Literal["en", "zh"] = _key("en", "eval: language of the prompt wording.")
    n_shot: int = _key(5, "eval: worked examples from the dev split before each question.")
    save_dir: str | None = _key(None, "eval: folder for results.json (default saves/eval/<task>).")
    compare_models: str | None = _key(
        None, "compare and eval (ours): models to compare, comma separated `name=model[+adapter...]`; "
        "`name=+adapter` puts an adapter on model_name_or_path."
    )
    compare_dir: str = _key("saves/compare", "compare (ours): folder for report.md, report.html and results.json.")
    judge_api_base: str | None = _key(
        None, "compare (ours): OpenAI-compatible base URL of an LLM judge (key in env JUDGE_API_KEY)."
    )
    judge_model: str = _key("gpt-4o-mini", "compare (ours): the judge's model name.")


@dataclass
class DatagenArguments:
    GROUP: ClassVar[str] = "datagen"

    synth_categories: dict | None = _key(
        None, "datagen (ours): synth: categories by name, each `{system, templates, pools, count}`; a `{var}` in a "
        "template draws from the category's `pools`, else from `synth_pools`.")
    synth_pools: dict | None = _key(None, "datagen (ours): synth: variable pools shared by every category (name: [values]).")
    synth_count: int | None = _key(
        None, "datagen (ours): synth: questions in total, shared evenly by the categories without their own `count`.")
    synth_test_size: float = _key(
        0.0, "datagen (ours): synth: held-out questions (a fraction in (0,1) or a count), registered as `<register_as>_test`.")
    register_as: str | None = _key(
        None, "datagen (ours): register the output in dataset_dir/dataset_info.json under this name.")
    api_base: str | None = _key(
        None, "datagen (ours): OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (`alignlab api`).")
    api_model: str | None = _key(None, "datagen (ours): the model name sent to `api_base`.")
    api_key_env: str = _key("OPENAI_API_KEY", "datagen (ours): the environment variable holding the API key.")
    max_concurrency: int = _key(8, "datagen (ours): most requests in flight at once, per endpoint.")
    request_timeout: float = _key(120.0, "datagen (ours): seconds one request may take before it counts as failed.")
    max_retries: int = _key(
        5, "datagen (ours): retries of a request after 429, 5xx, a timeout or a malformed response.")
    retry_backoff: float = _key(
        1.0, "datagen (ours): first retry delay in seconds, doubled each retry, with jitter; never under Retry-After.")
    api_prices: dict | None = _key(
        None, "datagen (ours): USD per million tokens by model, `{model: {input: x, output: y}}`, for the cost total.")
    judge_mode: Literal["improve", "pairwise"] = _key(
        "improve", "datagen (ours): judge: `improve` (good answer -> chosen, bad -> the judge's improved answer) or "
        "`pairwise` (two candidates judged in both orders).")
    judge_rubric: str | None = _key(None, "datagen (ours): judge: the rubric file (text) the judge scores against.")
    judge_candidates: str | None = _key(
        None, "datagen (ours): judge pairwise: two `generate` outputs (generated.jsonl or its folder), comma "
        "separated, compared row by row by id.")
    rejected_model: str | None = _key(
        None, "datagen (ours): judge improve: the model that writes the rejected answer when the original is good "
        "(e.g. the base model).")
    rejected_api_base: str | None = _key(None, "datagen (ours): judge improve: base URL of rejected_model; default api_base.")
    rejected_temperature: float | None = _key(
        None, "datagen (ours): judge improve: sampling temperature of rejected_model; default `temperature`.")


@dataclass
class StudioArguments:
    GROUP: ClassVar[str] = "studio"

    num_candidates: int = _key(
        2, "studio (ours): candidates: answers per prompt (2-4), each with its own seed (and temperature).")
    candidate_models: str | None = _key(
        None, "studio (ours): candidates: models or run folders (a LoRA run folder = its base model + the adapter), "
        "comma separated, taking the candidates in turn; default `model_name_or_path` + `adapter_name_or_path`.")
    candidate_temperatures: str | None = _key(
        None, "studio (ours): candidates: sampling temperatures, comma separated, candidate i takes the i-th "
        "(cycled); default `temperature` for all.")
    max_resamples: int = _key(
        4, "studio (ours): candidates: times an exact duplicate of another candidate is sampled again (new seed).")
    studio_dir: str | None = _key(
        None, "studio (ours): the annotation project: candidates.jsonl and annotations.sqlite (an `alignlab data "
        "candidates` output_dir).")
    guideline: str | None = _key(
        None, "studio (ours): the ranking standard shown to annotators (text, or a .md/.txt file).")
    pair_mode: Literal["best_vs_rest", "adjacent", "all_pairs"] = _key(
        "best_vs_rest", "studio (ours): pairs: best vs each other (`best_vs_rest`), neighbours in the ranking "
        "(`adjacent`) or every ordered pair (`all_pairs`); ties give no pair.")
    annotator_mode: Literal["majority", "per_annotator"] = _key(
        "majority", "studio (ours): pairs with several annotators: the majority preference per candidate pair, or "
        "every annotator's pairs.")
    rm_gate_override: bool = _key(
        False, "ppo/grpo (ours): use a `reward_model` whose stage rm run reported `rm_ready: false` (held-out accuracy "
        "under `rm_min_accuracy`); without it such a reward model is refused.", group="reward")


GROUPS = (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments, EvaluationArguments,
          DatagenArguments, StudioArguments)
