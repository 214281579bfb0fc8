"""Training options: four dataclasses, read from YAML with command-line overrides (utils.config).

    options = train_options(argv)                                  # a script: the command line
    options = train_options(config="RUN/config.yaml", overrides={"run_name": "again"}, root=ROOT)  # a library caller
    training.trainer.train(options)

`TrainOptions` bundles the four with what the run needs beside them (the resolved option dict, root,
resume, config path); `parse_train_options(argv)` gives the pieces, for callers that only read options.

`TrainConfig` is TRL's `SFTConfig` (so every TrainingArguments key is an option) with defaults that
fit this project: precision and device resolved from the hardware, TensorBoard on, and `max_length`
meaning the length guard's limit (never a truncation, see `training.data`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from scoring.tasks import training_task
from utils.cli import add_root_arg
from utils.config import config_parser, parse_config
from utils.errors import VLMStudiesError

# The language model's projections in Qwen2-VL (transformers 5 module names). `all-linear` would also
# wrap the vision tower (Setup/NOTES.md §3), so targets are spelled out and matched under the language model.
LM_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelOptions:
    """The base model and how it is loaded."""

    model: str = field(default="local:small", metadata={
        "help": "Hub id (Qwen/Qwen2-VL-2B-Instruct), a local model folder, or local:small / local:tiny"})
    dtype: str = field(default="auto", metadata={
        "help": "weights dtype: auto (bf16 when training in bf16, else fp32), bf16 or fp32"})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "Q-LoRA: load the base in 4-bit NF4 with double quantisation (vision tower and lm_head stay "
                "unquantised)"})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "attention kernel (sdpa, eager, flash_attention_2); default: transformers' choice"})
    torch_threads: int | None = field(default=None, metadata={
        "help": "CPU threads for torch's operators (default: torch's choice, one per core)"})


@dataclass
class LoraOptions:
    """The LoRA adapter: rank, scale and which modules it adapts."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] = field(default_factory=lambda: list(LM_PROJECTIONS), metadata={
        "help": "projection names adapted in the LANGUAGE MODEL only (vision modules are never matched by these)"})
    lora_vision_merger: bool = field(default=False, metadata={
        "help": "also adapt the vision merger (the MLP that maps patches into the language model)"})
    lora_vision_blocks: bool = field(default=False, metadata={
        "help": "also adapt the vision transformer blocks (attention qkv/proj and MLP fc1/fc2)"})


@dataclass
class DataOptions:
    """The training data and the accuracy measured before, during and after training."""

    source: str | None = field(default="synthetic", metadata={
        "help": "hub id (pingzhili/nlvr2), a local folder / parquet file in its schema, or synthetic"})
    dataset: str = field(default="nlvr2", metadata={
        "help": "the task (scoring/tasks/) whose rows source and eval_split hold: nlvr2 (NLVR2 and the synthetic "
                "NLVR2: a statement about two images) or vsr (VSR: a caption about one image; "
                "cambridgeltl/vsr_random, a local copy, or synthetic)"})
    split: str = field(default="train", metadata={"help": "split to train on"})
    mode: str = field(default="cached", metadata={
        "help": "cached: manifest-checked local shards, random access, epochs; streaming: read the source as "
                "it comes through a shuffle buffer (needs max_steps)"})
    families: list[str] = field(default_factory=list, metadata={
        "help": "train only on these statement families (synthetic sets: grounding_left grounding_right count "
                "compare quantifier); empty: every row"})
    train_limit: int | None = field(default=None, metadata={"help": "use only the first N rows of the split"})
    template: str = field(default="tf", metadata={"help": "prompt template (vlm_datasets.prompts.TEMPLATES)"})
    min_pixels: int | None = field(default=None, metadata={
        "help": "image processor min_pixels (fixes the fewest visual tokens per image: one per 28x28)"})
    max_pixels: int | None = field(default=None, metadata={
        "help": "image processor max_pixels (caps visual tokens per image: one per 28x28)"})
    shuffle_buffer: int = field(default=1000, metadata={
        "help": "streaming: rows held (still encoded) in the shuffle buffer"})
    overlong: str = field(default="skip", metadata={
        "help": "an example longer than max_length: skip (and count) or error; it is never truncated"})
    eval_split: str | None = field(default="validation", metadata={
        "help": "split for accuracy before/after training and during it; none to skip"})
    eval_limit: int | None = field(default=None, metadata={"help": "first N rows of eval_split for before/after"})
    eval_batch_size: int = field(default=16, metadata={"help": "batch size of score-mode evaluation"})
    accuracy_eval_steps: int = field(default=0, metadata={
        "help": "every N optimizer steps, score a fixed subset of eval_split and log accuracy (0: off)"})
    accuracy_eval_size: int = field(default=64, metadata={"help": "rows in that fixed subset"})
    occlusion_eval_steps: int = field(default=0, metadata={
        "help": "every N optimizer steps (and at step 0), the occlusion summary on the same fixed subset: how "
                "P(True) moves when the left or right image is replaced (evals/inside), per family, into "
                "dynamics.jsonl and TensorBoard (0: off; costs 5 forward passes per example)"})


@dataclass
class TrainConfig(SFTConfig):
    """SFTConfig with this project's defaults; every TrainingArguments key remains an option."""

    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 mixed precision; default: on when the GPU has native bf16 (A100/L4/H100), off on T4 and "
                "CPU (fp32). fp16 is never a default: Qwen2-VL gives NaN/garbage in fp16"})
    use_cpu: bool = field(default=None, metadata={"help": "train on CPU; default: when no GPU is visible"})
    max_length: int | None = field(default=4096, metadata={
        "help": "longest allowed example (prompt + visual tokens + answer). Longer examples are skipped and "
                "counted, or stop the run, by `overlong`; they are never truncated (TRL would cut image tokens)"})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={
        "help": "tensorboard (events under <root>/logs/tb/<run_name>), none, or other integrations"})
    logging_steps: float = field(default=10, metadata={"help": "log loss, lr, grad norm, samples/s every N steps"})
    save_steps: float = field(default=100, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=2, metadata={"help": "keep this many latest checkpoints"})
    # TRL defaults the deprecated alias gradient_checkpointing to True (a FutureWarning on every parse); the new
    # name carries the same default here.
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "deprecated alias of activation_checkpointing"})
    activation_checkpointing: bool | None = field(default=True, metadata={
        "help": "recompute activations in the backward pass: less memory, ~20-30%% slower. Input gradients are "
                "enabled for PEFT automatically"})
    use_liger_kernel: bool = field(default=False, metadata={
        "help": "Liger's Triton kernels in the model's layers (a CUDA GPU and the liger-kernel package only); TRL "
                "keeps its own fused LM-head loss (Setup/NOTES.md §3)"})
    run_name: str | None = field(default=None, metadata={
        "help": "the run dir's name under <root>/checkpoints/ (default: the config's name and the time)"})
    output_dir: str | None = field(default=None, metadata={
        "help": "set by the run: <root>/checkpoints/<run_name> (use --root and --run_name)"})

    def __post_init__(self):
        import torch

        if self.use_cpu is None:
            self.use_cpu = not torch.cuda.is_available()
        if self.bf16 is None:
            # Emulated bf16 (T4) is slow; only native support counts. CPU trains in fp32 (faster here).
            self.bf16 = (not self.use_cpu and torch.cuda.is_available()
                         and torch.cuda.is_bf16_supported(including_emulation=False))
        super().__post_init__()


OPTION_TYPES = (ModelOptions, LoraOptions, DataOptions, TrainConfig)

# --help: the options most runs set come right after --config; of TrainingArguments' ~120 keys, the ones this
# project sets or runs usually change are described, the rest only named (--help_all describes every one).
HELP_FIRST = ("run_name", "model", "max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
              "lora_r")
HELP_TRAINING_ARGS = ("gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "weight_decay", "optim",
                      "max_grad_norm", "seed", "bf16", "use_cpu", "max_length", "report_to", "logging_steps",
                      "save_steps", "save_total_limit", "activation_checkpointing", "dataloader_num_workers",
                      "dataloader_persistent_workers", "use_liger_kernel")


def add_run_flags(parser) -> None:
    add_root_arg(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run named by --run_name from its latest checkpoint")


def train_parser(description: str | None = None, full: bool = False):
    """The parser parse_train_options uses, for --help (`full`: what --help_all prints)."""

    return config_parser(OPTION_TYPES, add_run_flags, description, HELP_FIRST, {TrainConfig: HELP_TRAINING_ARGS},
                         full)[0]


def check_liger(args) -> None:
    """`use_liger_kernel` needs a CUDA GPU (Liger's kernels are Triton) and the liger-kernel package."""
    import importlib.util

    import torch

    if not getattr(args, "use_liger_kernel", False):
        return
    if args.use_cpu or not torch.cuda.is_available():
        raise VLMStudiesError("use_liger_kernel needs a CUDA GPU (Liger's kernels are Triton): set use_liger_kernel "
                              "false to train on CPU")
    if importlib.util.find_spec("liger_kernel") is None:
        raise VLMStudiesError("use_liger_kernel is set but liger-kernel is not installed: pip install liger-kernel "
                              "(GPU only), or set use_liger_kernel false")


@dataclass
class TrainOptions:
    """Everything `training.trainer.train` needs: the four option objects and the run's place."""
    model: ModelOptions
    lora: LoraOptions
    data: DataOptions
    args: TrainConfig
    resolved: dict  # every option as the run uses it (what config.yaml records)
    root: str | None = None  # artifact root (None: $VLM_STUDIES_ROOT, Drive, ./artifacts)
    resume: bool = False  # continue the run named by args.run_name from its latest checkpoint
    config: str | None = None  # the YAML file the options came from (names a run that has no run_name)


def train_options(argv=None, description: str | None = None, *, config=None, overrides: dict | None = None,
                  root=None, resume: bool = False) -> TrainOptions:
    """Options of one training run from a command line (`argv`; None reads sys.argv) or, for a library caller,
    from `config` (a YAML file) plus `overrides` (option name -> value); both pass the same checks."""
    if argv is None and (config is not None or overrides):
        argv = []
    (model, lora, data, args), resolved, extra = parse_train_options(argv, description, config=config,
                                                                     overrides=overrides)
    return TrainOptions(model, lora, data, args, resolved, root=root if root is not None else extra.root,
                        resume=resume or extra.resume, config=extra.config)


def parse_train_options(argv=None, description: str | None = None, for_this_machine: bool = True, *,
                        config=None, overrides: dict | None = None):
    """`((model, lora, data, args), resolved, extra)`; extra has `root`, `resume` and `config`.

    `for_this_machine`: also refuse options this machine cannot run (use_liger_kernel without a GPU or the
    package); the planner, which plans for other machines, turns it off."""
    opts, resolved, extra = parse_config(OPTION_TYPES, argv, extra_flags=add_run_flags, description=description,
                                         first=HELP_FIRST, brief={TrainConfig: HELP_TRAINING_ARGS}, config=config,
                                         overrides=overrides)
    _, _, data, args = opts
    if data.mode not in ("cached", "streaming"):
        raise VLMStudiesError(f"unknown mode '{data.mode}'; choose cached or streaming")
    training_task(data.dataset)  # the registry's (scoring/tasks): a clear error for an unknown one
    if data.overlong not in ("skip", "error"):
        raise VLMStudiesError(f"unknown overlong policy '{data.overlong}'; choose skip or error")
    for name in ("accuracy_eval_steps", "occlusion_eval_steps"):
        if getattr(data, name) < 0:
            raise VLMStudiesError(f"{name} must be 0 (off) or a positive number of steps, not {getattr(data, name)}")
    if data.mode == "streaming" and (args.max_steps is None or args.max_steps <= 0):
        raise VLMStudiesError("streaming training needs --max_steps N (a stream has no length to count epochs by)")
    if args.fp16:
        raise VLMStudiesError("fp16 breaks Qwen2-VL (NaN/garbage outputs); use bf16 on GPUs that have it, else fp32")
    check_ranges(opts)
    if args.dataloader_persistent_workers and not args.dataloader_num_workers:
        # a config that keeps its workers (smoke_cpu.yaml), run with --dataloader_num_workers 0: none to keep
        args.dataloader_persistent_workers = resolved["dataloader_persistent_workers"] = False
    if for_this_machine:
        check_liger(args)
    return opts, resolved, extra


# (option, lowest allowed, lowest is allowed itself, highest or None, highest is allowed itself): checked before
# the run dir exists, so a value the optimizer or the data loader would refuse minutes later fails at once.
RANGES = (
    ("learning_rate", 0, True, None, False), ("weight_decay", 0, True, None, False),
    ("adam_beta1", 0, True, 1, False), ("adam_beta2", 0, True, 1, False), ("adam_epsilon", 0, True, None, False),
    ("max_grad_norm", 0, True, None, False), ("warmup_steps", 0, True, None, False),
    ("per_device_train_batch_size", 1, True, None, False), ("gradient_accumulation_steps", 1, True, None, False),
    ("num_train_epochs", 0, False, None, False), ("logging_steps", 0, False, None, False),
    ("save_steps", 0, False, None, False), ("max_length", 1, True, None, False),
    ("lora_r", 1, True, None, False), ("lora_alpha", 0, False, None, False), ("lora_dropout", 0, True, 1, False),
    ("train_limit", 1, True, None, False), ("eval_limit", 1, True, None, False),
    ("eval_batch_size", 1, True, None, False), ("accuracy_eval_steps", 0, True, None, False),
    ("accuracy_eval_size", 1, True, None, False), ("shuffle_buffer", 1, True, None, False),
    ("min_pixels", 1, True, None, False), ("max_pixels", 1, True, None, False), ("torch_threads", 1, True, None, False),
)


def check_ranges(opts) -> None:
    """One-line errors for numeric options out of range (None means "not set" and passes)."""
    values = {}
    for o in opts:
        values.update({k: v for k, v in vars(o).items() if k not in values})
    for name, lo, lo_ok, hi, hi_ok in RANGES:
        v = values.get(name)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if name == "num_train_epochs" and (values.get("max_steps") or 0) > 0:
            continue  # max_steps decides the length
        if v < lo or (v == lo and not lo_ok) or (hi is not None and (v > hi or (v == hi and not hi_ok))):
            want = (f">= {lo}" if lo_ok else f"> {lo}") + ("" if hi is None else f" and {'<=' if hi_ok else '<'} {hi}")
            raise VLMStudiesError(f"--{name} {v} is out of range: it must be {want}")
    if values.get("min_pixels") and values.get("max_pixels") and values["min_pixels"] > values["max_pixels"]:
        raise VLMStudiesError(f"--min_pixels {values['min_pixels']} is larger than --max_pixels {values['max_pixels']}")
