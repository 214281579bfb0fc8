"""One eval run: a task's examples through a model (+ adapter) into predictions, metrics and metadata.

    <root>/evals/<run_name>/
        predictions.jsonl   one line per example (schema in `make_record`), appended per batch
        metrics.json        every metric of `scoring.metrics.compute_metrics` + what was evaluated
        config.yaml         the resolved options, headed by the command line
        run_meta.json       git SHA + dirty flag, versions, device, seed, dataset manifest; one
                            entry per session (a resumed run has several)
        eval_identity.json  what must not change for the predictions to belong together
        tb/                 TensorBoard scalars (eval/accuracy, ...; progress/running_accuracy)

Resuming: batches are fixed slices of the example stream (examples 0..B-1, B..2B-1, ...), so a
re-run recomputes only batches that are not fully on disk, with exactly the same padding as an
uninterrupted run; it writes only the uids that are missing. Metrics are always computed from
predictions.jsonl, so an interrupted-and-resumed run gives the same metrics.json as one that was
never interrupted. (Resuming with another --batch_size is allowed, e.g. after running out of GPU
memory; those batches then differ from an unbroken run only by padding numerics.)

One process per run: an eval holds `<root>/evals/.locks/<run_name>.lock` (a shard its own shard lock) from
start to end; a second process on the same run stops at once naming the holder (the OS frees the
lock when a process dies, so a killed run never blocks the next). A finished run is never replaced
by a different result: another eval identity, a shorter --limit or other --ece_bins is refused
(a longer --limit extends it), and the default run name of a partial run ends in -limitN. A start
that fails before the first prediction (a model that cannot be loaded) removes the run dir it made;
a full disk is one line, and the same command continues.

Feeding: the examples are read, filtered, decoded and encoded by `--num_workers` DataLoader workers ahead of
the model (`evals.feed`; 0: in this process), with the same batches, predictions and bad rows as in-process.
Torch's CPU threads: `--torch_threads`, else the rule of `utils/threads.py`; recorded per session.

The steps: `plan_eval` (task, data, budget, adapter, run dir; fails before anything slow), then under the
run lock `_check_run_dir`, `_load_model`, `_record_session`, `_score` (this process's batches) and
`_finish` (metrics) or `_finish_shard` (done marker, barrier, merge).

Sharding: with `--num_shards N --shard_index i`, or one shard per process under `accelerate launch`
/ `torchrun`, shard i scores batches i, i+N, i+2N, ... (the same batches as one process, so the same
padding and the same numbers) into `shards/shard-i-of-N.jsonl`, and marks itself done with the full
uid order it walked. The merge (the launch's main process after a barrier, through accelerate's
`PartialState`, or by hand whichever shard finishes last) writes predictions.jsonl in example order,
refusing a missing uid or shards that saw different examples, then the metrics. A killed shard resumes
like a single run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import disk_full_guard, VLMStudiesError
from utils.generation import describe, ignored_checkpoint_settings, LAB_DECODING
from utils.io import atomic_write_json, atomic_write_text, files_match, removed_if_start_fails, sha256_file
from utils.paths import get_root, run_name_problem
from utils.run_meta import peak_memory, run_metadata
from scoring.metrics import compute_metrics
from scoring.modes import encode_prompts, generate_encoded, generation_config, score_encoded
from scoring.parser import PARSER_VERSION
from scoring.predictions import FILENAME, PredictionWriter, _plain, read_predictions
from scoring.slices import SLICES_VERSION
from scoring.tasks import choose_data, get_task, no_examples_reason
from utils.config import save_resolved
from utils.locks import in_use_error, lock_holder, locked, run_lock
from utils.models import ADAPTER_SUBDIR, load_model_and_processor, resolve_adapter_dir
from utils.seed import seed_everything
from utils.threads import apply_torch_threads
from vlm_datasets.prompts import budget_record, get_template, pixel_budget, set_pixel_limits

ANSWER_MODES = ("score", "generate")
IDENTITY_FILE = "eval_identity.json"
SHARDS_DIR = "shards"


@dataclass
class EvalArgs:
    """Options of one eval run (YAML under evals/configs/, each overridable with --key value)."""

    model: str = field(default="local:small", metadata={
        "help": "base model: Hub id (Qwen/Qwen2-VL-2B-Instruct), local folder, or local:tiny / local:small"})
    adapter: str | None = field(default=None, metadata={
        "help": "LoRA adapter: an adapter folder, a training run dir, or a run name under <root>/checkpoints/"})
    task: str = field(default="nlvr2", metadata={"help": "registered task (see scoring/tasks/); e.g. nlvr2, "
                                                         "nlvr2_synth_grounding"})
    source: str | None = field(default=None, metadata={
        "help": "dataset: Hub id, local folder/parquet, or 'synthetic' (default: the task's source)"})
    split: str | None = field(default=None, metadata={"help": "split (default: the task's, validation)"})
    mode: str = field(default="streaming", metadata={"help": "data mode: streaming or cached"})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N examples of the task"})
    on_error: str = field(default="skip", metadata={"help": "bad rows: skip (counted, listed) or raise"})
    answer_mode: str = field(default="score", metadata={
        "help": "score: compare True/False answer-token probabilities (p_true, never invalid); generate: greedy "
                "generation + answer parser (invalid answers counted)"})
    template: str = field(default="tf", metadata={"help": "prompt template (vlm_datasets.prompts.TEMPLATES)"})
    batch_size: int = field(default=8, metadata={
        "help": "examples per forward pass; out of memory? the same command with a smaller one continues the run"})
    max_new_tokens: int = field(default=16, metadata={"help": "generate mode: longest answer"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on capable GPUs, else fp32), bf16, fp32"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load the base in 4-bit NF4 (as Q-LoRA trains)"})
    min_pixels: int | None = field(default=None, metadata={
        "help": "image resize lower bound (pixels); default: the task's budget (the lab's 4*28*28=3136)"})
    max_pixels: int | None = field(default=None, metadata={
        "help": "image resize upper bound (pixels); default: the task's budget (the lab's 512*28*28=401408, an NLVR2 "
                "pair near 1,000 visual tokens); never the processor's own 16384*28*28"})
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, flash_attention_2"})
    merge_adapter: bool = field(default=False, metadata={
        "help": "merge the LoRA weights into the base before evaluating: faster (no extra matmuls per layer), "
                "logits equal to ~1e-7; not with load_in_4bit"})
    require_adapter: bool = field(default=False, metadata={
        "help": "refuse to run without --adapter (set by configs that evaluate fine-tuned models)"})
    run_name: str | None = field(default=None, metadata={
        "help": "output folder under <root>/evals/ (default: model-adapter-task-split-answer_mode)"})
    seed: int = field(default=0, metadata={"help": "recorded; greedy decoding and scoring are deterministic"})
    ece_bins: int = field(default=10, metadata={"help": "equal-width confidence bins for ECE"})
    overwrite: bool = field(default=False, metadata={
        "help": "start over when the run dir holds predictions of a different eval (they are deleted)"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard scalars into the run dir"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (examples/s)"})
    num_shards: int | None = field(default=None, metadata={
        "help": "split the batches across N processes (batch b goes to shard b %% N); the shards' predictions are "
                "merged into one predictions.jsonl. Default: one shard per process of accelerate launch / torchrun"})
    shard_index: int | None = field(default=None, metadata={"help": "which shard this process scores (0..N-1)"})
    num_workers: int | None = field(default=None, metadata={
        "help": "DataLoader workers that read, decode and encode the examples ahead of the model (evals.feed); 0: "
                "in this process; default: 2 when the model is on a GPU and at least 2 cores are free by the 1-min "
                "load, else 0 (on the CPU the model needs the cores). Any number gives the same predictions"})
    torch_threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads of this process; default: the cores not busy (1-min load) and not taken by "
                "num_workers, at least 1 (utils/threads.py: torch's one-per-core default collapses on a shared "
                "machine); recorded in run_meta.json"})

    def __post_init__(self):
        if self.answer_mode not in ANSWER_MODES:
            raise ValueError(f"answer_mode must be score or generate, not '{self.answer_mode}'")
        if self.mode not in ("streaming", "cached"):
            raise ValueError(f"mode must be streaming or cached, not '{self.mode}'")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of examples, not {self.limit}")
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be skip or raise, not '{self.on_error}'")
        for name in ("max_new_tokens", "ece_bins", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) is larger than max_pixels ({self.max_pixels})")
        if self.merge_adapter and self.load_in_4bit:
            raise ValueError("merge_adapter cannot merge into a 4-bit base without rounding the weights; set "
                             "merge_adapter false, or load the base in full precision (load_in_4bit false)")
        if (self.num_shards is None) != (self.shard_index is None):
            raise ValueError("give num_shards and shard_index together (or neither: accelerate launch shards by process)")
        if self.num_shards is not None and not (self.num_shards >= 1 and 0 <= self.shard_index < self.num_shards):
            raise ValueError(f"shard_index must be in 0..num_shards-1, not {self.shard_index} of {self.num_shards}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, not {self.torch_threads}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 (in this process) or more, not {self.num_workers}")
        if self.run_name is not None and run_name_problem(self.run_name):
            raise ValueError(run_name_problem(self.run_name))


# ----------------------------------------------------------------------------- naming and identity

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def resolve_adapter(adapter: str | None, root: Path) -> Path | None:
    """An adapter folder, a training run dir, or a run name under `<root>/checkpoints/` -> adapter folder."""

    if not adapter:
        return None
    path = Path(adapter).expanduser()
    if not path.exists() and not path.is_absolute() and (root / "checkpoints" / adapter).exists():
        path = root / "checkpoints" / adapter
    return resolve_adapter_dir(path)


def adapter_label(adapter_dir: Path | None) -> str:
    if adapter_dir is None:
        return "zeroshot"

    return adapter_dir.parent.name if adapter_dir.name == ADAPTER_SUBDIR else adapter_dir.name


def default_run_name(args: EvalArgs, task, split: str, adapter_dir: Path | None) -> str:
    """model-adapter-task-split-answer_mode, plus -limitN for a partial run (so it never takes a full run's name)."""
    model = args.model.rstrip("/").split("/")[-1]
    parts = [model, adapter_label(adapter_dir), task.name, split, args.answer_mode]
    if args.limit is not None:
        parts.append(f"limit{args.limit}")
    return "-".join(_slug(x) for x in parts)


def adapter_info(adapter_dir: Path | None) -> dict | None:
    if adapter_dir is None:
        return None
    weights = [p for p in ("adapter_model.safetensors", "adapter_model.bin") if (adapter_dir / p).is_file()]
    info = {"path": str(adapter_dir), "weights_sha256": sha256_file(adapter_dir / weights[0]) if weights else None}
    for name in ("base_model.json", "adapter_config.json"):
        if (adapter_dir / name).is_file():
            cfg = json.loads((adapter_dir / name).read_text(encoding="utf-8"))
            if name == "adapter_config.json":
                cfg = {k: cfg.get(k) for k in ("peft_type", "r", "lora_alpha", "target_modules", "base_model_name_or_path")}
            info[name.split(".")[0]] = cfg
    return info


def merge_adapter(model):
    """Fold the LoRA weights into the base (faster inference), keeping tied embeddings correct.

    Qwen2-VL ties lm_head to the input embeddings. Merging a LoRA on lm_head writes into that shared
    tensor and so silently changes the input embeddings too; untie them first.
    """
    import torch

    base = model.get_base_model()
    head, emb = base.get_output_embeddings(), base.get_input_embeddings()
    head, emb = getattr(head, "base_layer", head), getattr(emb, "base_layer", emb)
    if head is not None and emb is not None and head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    return model.merge_and_unload()


def eval_identity(args: EvalArgs, task, template, split: str, data_info: dict, adapter: dict | None,
                  pixels: tuple[int, int]) -> dict:
    """Everything that decides the predictions: a run dir's predictions must all share it.

    Left out on purpose: `limit` (a longer --limit extends a run), the data `mode` (streaming and
    cached loading yield identical examples) and `batch_size` (after running out of GPU memory, the
    same run continues with a smaller batch; results then differ from an unbroken run only by
    padding numerics, and run_meta.json records each session's batch size).
    """

    ident = {"model": args.model, "adapter_weights_sha256": adapter and adapter["weights_sha256"],
             "task": task.tag, "template": template.tag, "answer_mode": args.answer_mode,
             "source": data_info.get("source"), "split": split,
             "data_fingerprint": data_info.get("fingerprint") or data_info.get("revision"),
             "dtype": args.dtype, "load_in_4bit": args.load_in_4bit,
             "min_pixels": pixels[0], "max_pixels": pixels[1],  # the run's budget, defaults resolved
             "attn_implementation": args.attn_implementation, "slices_version": SLICES_VERSION,
             "merge_adapter": bool(args.merge_adapter and adapter)}
    if args.answer_mode == "generate":
        ident.update(max_new_tokens=args.max_new_tokens, parser_version=PARSER_VERSION, decoding=LAB_DECODING)
    return ident


def finished_with(args: EvalArgs) -> dict:
    """The options that shape metrics.json beyond the predictions: a finished run is never redone with others.

    A longer `limit` (or none) extends a run: its predictions are all kept and the new metrics cover
    them. A shorter one would overwrite the finished metrics with those of fewer examples while
    predictions.jsonl keeps them all, and other ECE bins would change the finished metrics: refused.
    """
    return {"limit": args.limit, "ece_bins": args.ece_bins}


def _extends(old_limit, new_limit) -> bool:
    return old_limit is not None and (new_limit is None or new_limit >= old_limit)


def check_finished(run_dir: Path, wanted: dict, overwrite: bool) -> None:
    """Refuse to recompute a finished run's metrics with other `finished_with` options; --overwrite starts over."""
    if not (run_dir / "metrics.json").is_file():
        return
    try:
        done = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable metrics are recomputed from the predictions
    # Older metrics.json files carry no ece_bins: their bins are in the calibration block.
    had = {"limit": done.get("limit"),
           "ece_bins": done.get("ece_bins", (done.get("calibration") or {}).get("bins", wanted["ece_bins"]))}
    diff = [k for k in wanted if had[k] != wanted[k] and not (k == "limit" and _extends(had[k], wanted[k]))]
    if diff and overwrite:
        _start_over(run_dir)
    elif diff:
        shown = "; ".join(f"{k}: {had[k]!r} -> {wanted[k]!r}" for k in diff)
        raise VLMStudiesError(f"run dir {run_dir} holds a finished eval with other options ({shown}); it is kept as "
                              f"it is: drop --run_name (the default name includes the limit) or pass another one, or "
                              f"--overwrite true to delete that run and start over")


def check_identity(run_dir: Path, ident: dict, overwrite: bool, results: str | None = None,
                   derived: tuple = ("metrics.json",), identity_file: str = IDENTITY_FILE,
                   what: str = "predictions of a different eval") -> None:
    """Refuse to mix predictions of two different evals in one run dir (unless told to start over).

    `results` (default predictions.jsonl) is the append-only file the identity guards, `derived` what is
    computed from it; the look-inside split run (`evals.inside`) guards its occlusion.jsonl the same way.
    """
    from scoring.predictions import FILENAME

    FILENAME = results or FILENAME
    path = run_dir / identity_file
    shard_files = sorted((run_dir / SHARDS_DIR).glob("shard-*")) if (run_dir / SHARDS_DIR).is_dir() else []
    has_predictions = ((run_dir / FILENAME).is_file() and (run_dir / FILENAME).stat().st_size > 0) or any(
        f.suffix == ".jsonl" and f.stat().st_size > 0 for f in shard_files)
    if path.is_file() and has_predictions:
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in sorted(set(old) | set(ident)) if old.get(k) != ident.get(k)]
        if diff and not overwrite:
            shown = "; ".join(f"{k}: {old.get(k)!r} -> {ident.get(k)!r}" for k in diff[:4])
            raise VLMStudiesError(f"run dir {run_dir} holds {what} ({shown}); pass another --run_name, or "
                                  f"--overwrite true to delete them and start over")
        if diff:
            _start_over(run_dir, (FILENAME, *derived))
    elif has_predictions and not path.is_file() and not overwrite:
        raise VLMStudiesError(f"run dir {run_dir} holds {FILENAME} without {identity_file}, so it cannot be resumed "
                              f"safely; pass another --run_name, or --overwrite true to start over")
    elif has_predictions and overwrite:
        _start_over(run_dir, (FILENAME, *derived))


def _start_over(run_dir: Path, files: tuple | None = None) -> None:
    """--overwrite: remove the predictions and metrics of the eval that was in `run_dir` (or `files`)."""

    for name in files or (FILENAME, "metrics.json"):
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / SHARDS_DIR).is_dir():
        for f in (run_dir / SHARDS_DIR).glob("shard-*"):
            f.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- records

def make_record(task, template, answer_mode: str, example, out: dict) -> dict:
    """One predictions.jsonl line: the example, the answer, and how it was obtained."""
    gold = bool(task.gold(example))
    pred = out.get("prediction")
    valid = bool(out.get("valid", pred is not None))
    meta = example.meta or {}
    return {
        "uid": example.uid,
        "set_id": meta.get("set_id"),
        "consistency_group": meta.get("consistency_group"),  # NLVR2's: one sentence, all its pairs
        "pair_key": meta.get("pair_key"),
        "sentence": example.sentence,
        "label": gold,
        "prediction": None if pred is None else bool(pred),
        "p_true": out.get("p_true"),
        "raw_output": out.get("raw_output"),
        "valid": valid,
        "correct": valid and bool(pred) == gold,
        "visual_tokens": out.get("visual_tokens"),
        "template": template.name,
        "template_version": template.version,
        "task": task.name,
        "task_version": task.version,
        "answer_mode": answer_mode,
        "family": meta.get("family"),
        "slices": task.slices_of(example),
        "parse_reason": out.get("parse_reason"),
        "stopped": out.get("stopped"),
    }


def predict_batch(model, processor, task, template, examples: list, args: EvalArgs, enc: dict | None = None
                  ) -> list[dict]:
    """Records for one batch in the chosen answer mode (one schema for both); `enc`: its encoded prompts
    (`scoring.modes.encode_prompts` or `collate_encoded`), else they are encoded here."""

    if enc is None:
        enc = encode_prompts(processor, examples, template, task.to_inputs)
    if args.answer_mode == "score":
        outs = score_encoded(model, processor, examples, enc, template)
        for o in outs:
            o["valid"] = True
    else:
        outs = generate_encoded(model, processor, examples, enc, template, args.max_new_tokens,
                                parse=task.parse_response)
    return [make_record(task, template, args.answer_mode, ex, o) for ex, o in zip(examples, outs)]


# ----------------------------------------------------------------------------- the run

def _predict_or_explain(model, processor, task, template, batch, args, enc=None) -> list[dict]:
    import torch

    try:
        return predict_batch(model, processor, task, template, batch, args, enc)
    except torch.OutOfMemoryError:
        raise VLMStudiesError(f"out of GPU memory on a batch of {len(batch)} examples; the finished batches are "
                              f"kept: run the same command with a smaller --batch_size (or a lower --max_pixels, "
                              f"which starts a new run) to continue") from None


def _tb_writer(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: metrics.json still has everything
        print("[eval] tensorboard is not installed; skipping TensorBoard scalars", file=sys.stderr)
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _progress(total, initial, enabled):
    from tqdm.auto import tqdm

    # disable=None: tqdm draws only on a terminal, so a log written to a file stays line by line (no redraws)
    return tqdm(total=total, initial=initial, unit="ex", desc="eval", disable=None if enabled else True,
                dynamic_ncols=True, smoothing=0.1, file=sys.stderr)


def _session_meta(run_dir: Path, args: EvalArgs, extra: dict) -> None:

    path = run_dir / "run_meta.json"
    meta = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"sessions": []}
    meta["sessions"].append(run_metadata(args.seed, **extra))
    meta.update({k: v for k, v in meta["sessions"][0].items() if k not in ("sessions",)})  # first session on top
    meta["resumed"] = len(meta["sessions"]) > 1
    atomic_write_json(path, meta)


@dataclass(frozen=True)
class Shards:
    """Which part of the split this process evaluates: batches b with b % count == index."""

    index: int = 0
    count: int = 1
    launched: bool = False  # started by accelerate launch / torchrun: barriers instead of "last one merges"

    @property
    def active(self) -> bool:
        return self.count > 1


def feed_workers(args: EvalArgs) -> int:
    """The DataLoader workers of this run: `num_workers`, or `evals.feed.default_num_workers()`."""
    from evals.feed import default_num_workers

    return default_num_workers() if args.num_workers is None else args.num_workers


def shard_plan(args: EvalArgs) -> Shards:
    """`--num_shards/--shard_index` when given, else one shard per process of a launcher (WORLD_SIZE/RANK)."""
    import os

    if args.num_shards is not None:
        return Shards(args.shard_index, args.num_shards, launched=False)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        return Shards(int(os.environ.get("RANK", "0")), world, launched=True)
    return Shards()


def _launch_state(count: int | None = None):
    """accelerate's `PartialState` for a launched run: it joins the launcher's process group (gloo on CPU,
    NCCL on GPUs) and picks this process's GPU; its barrier is `wait_for_everyone`.

    Without a GPU it must be asked for the CPU (`cpu=True`): otherwise accelerate 1.15 sees no GPU and
    answers a single process whose barrier waits for nothing. `count`: the launch's processes, checked.
    """
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if count is not None and state.num_processes != count:
        raise VLMStudiesError(f"the launcher started {count} processes (WORLD_SIZE) but accelerate joined "
                              f"{state.num_processes}; run the shards by hand instead (--num_shards {count} "
                              f"--shard_index i)")
    return state


def _barrier(shards: Shards) -> None:
    if shards.launched:
        _launch_state().wait_for_everyone()


def shard_paths(run_dir: Path, index: int, count: int) -> tuple[Path, Path]:
    """(predictions of shard `index`, its completion marker) under `<run_dir>/shards/`."""
    base = run_dir / SHARDS_DIR / f"shard-{index:03d}-of-{count:03d}"
    return base.with_suffix(".jsonl"), base.with_suffix(".done.json")


def merge_shards(run_dir: Path, count: int) -> list[dict] | None:
    """Merge finished shards into `predictions.jsonl` (example order, each uid once); None while one is missing.

    Every shard walked the whole example stream, so each marker holds the full uid order; they must
    agree (same data, same batch size). Any uid of that order without a prediction in the shard
    files or in an earlier predictions.jsonl is an error naming the shard that owed it.
    """

    markers = []
    for i in range(count):
        _, done_path = shard_paths(run_dir, i, count)
        if not done_path.is_file():
            return None
        markers.append(json.loads(done_path.read_text(encoding="utf-8")))
    order = markers[0]["order"]
    for m in markers[1:]:
        if m["order"] != order:
            raise VLMStudiesError(f"shards of {run_dir} saw different examples (shard {m['shard_index']} vs 0: "
                                  f"{len(m['order'])} vs {len(order)} uids, or another order); run every shard with "
                                  f"the same data options and --batch_size")
    lookup: dict[str, dict] = {}
    for rec in read_predictions(run_dir / FILENAME):
        lookup.setdefault(rec["uid"], rec)
    for i in range(count):
        for rec in read_predictions(shard_paths(run_dir, i, count)[0]):
            lookup.setdefault(rec["uid"], rec)
    batch_size = markers[0]["batch_size"]
    missing = [u for u in order if u not in lookup]
    if missing:
        b = order.index(missing[0]) // batch_size
        raise VLMStudiesError(f"{len(missing)} uid(s) have no prediction after merging {count} shards of {run_dir} "
                              f"(first: {missing[0]}, owed by shard {b % count}); re-run that shard to fill them")
    wanted = set(order)
    records = [lookup[u] for u in order] + [r for u, r in lookup.items() if u not in wanted]
    _write_predictions_atomically(run_dir / FILENAME, records)
    for i in range(count):
        for path in shard_paths(run_dir, i, count):
            path.unlink(missing_ok=True)
    return records[:len(order)]


def _write_predictions_atomically(path: Path, records: list[dict]) -> None:

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=_plain) + "\n" for r in records))


def eval_lock(run_dir: Path, shards: Shards):
    """The run lock of this process: the whole run, or its shard (shards of one run work side by side).

    Lock files live in `<root>/evals/.locks/`, outside the run dir. A whole-run eval and a shard of the
    same run exclude each other too: each takes its own lock, then checks that the other kind is free.
    """

    locks = run_dir.parent / ".locks"
    whole = locks / f"{run_dir.name}.lock"
    if not shards.active:
        mine, others = whole, sorted(locks.glob(f"{run_dir.name}.shard-*.lock"))
        what = f"eval run {run_dir}"
    else:
        mine, others = locks / f"{run_dir.name}.shard-{shards.index:03d}-of-{shards.count:03d}.lock", [whole]
        what = f"shard {shards.index} of {shards.count} of eval run {run_dir}"

    @contextlib.contextmanager
    def hold():
        with run_lock(mine, what):
            for other in others:
                holder = lock_holder(other)
                if holder:
                    raise in_use_error(f"eval run {run_dir}", other, holder)
            yield

    return hold()


def _only_setup_files(run_dir: Path) -> bool:
    """A run dir holding its identity, config and metadata but no prediction: a start that failed."""

    preds = run_dir / FILENAME
    if preds.is_file() and preds.stat().st_size:
        return False
    return files_match(run_dir, (IDENTITY_FILE, "config.yaml", "run_meta.json", "run_meta.json.lock", FILENAME,
                                 "tb/*", "*.tmp"))


@dataclass
class EvalPlan:
    """Everything an eval run is decided by before its lock is taken (`plan_eval`): what, on which data, where."""

    args: EvalArgs
    resolved: dict | None
    root: Path
    config_path: str | None
    shards: "Shards"
    task: object
    template: object
    source: str
    split: str
    pixels: tuple[int, int]
    budget: dict
    adapter_dir: Path | None
    data: object
    data_info: dict  # `data.info`, read once (a local source's fingerprint hashes its files)
    ad_info: dict | None
    run_name: str
    run_dir: Path
    threads: dict | None = None

    @property
    def leads(self) -> bool:
        """This process writes what every shard shares (identity, config.yaml): the only one, or shard 0."""
        return not self.shards.active or self.shards.index == 0


@dataclass
class ShardScore:
    """What walking the example stream gave this process: the uid order, its records, counts, time."""

    order: list
    done: dict
    new: int
    reused: int
    mine: int
    elapsed: float
    tb: object = None  # the TensorBoard writer (single-process runs), closed by whoever finishes
    feed: object = None  # what the pass read and removed (`evals.feed.Feed`), for "no examples" reasons


def plan_eval(args: EvalArgs, resolved: dict | None = None, root=None, config_path: str | None = None,
              typed: frozenset = frozenset()) -> EvalPlan:
    """Resolve the task, data, pixel budget, adapter and run dir; fails fast, before anything slow or written."""

    shards = shard_plan(args)
    task = get_task(args.task)
    template = get_template(args.template)
    if args.require_adapter and not args.adapter:
        raise VLMStudiesError("this config evaluates a fine-tuned model: pass --adapter RUN (a training run name under "
                              "<root>/checkpoints/, a run dir, or an adapter folder)")
    root = get_root(root)
    choice = choose_data(task, args.source, args.split, typed)
    if choice.note and (not shards.active or shards.index == 0):
        print(f"[eval] {choice.note}", flush=True)  # beside the summary it explains
    source, split = choice.source, choice.split
    pixels = pixel_budget(args.min_pixels or task.min_pixels, args.max_pixels or task.max_pixels)
    budget = {**budget_record(*pixels), "from": "config" if (args.min_pixels and args.max_pixels) else
              f"task {task.name}'s budget (the lab default)" if not (args.min_pixels or args.max_pixels) else
              f"config + task {task.name}'s budget"}
    adapter_dir = resolve_adapter(args.adapter, root)  # before any slow loading: a bad path fails at once
    data, _ = task.load(source, split, args.mode, root=root, limit=args.limit, on_error=args.on_error,
                        min_pixels=pixels[0], max_pixels=pixels[1])
    run_name = args.run_name or default_run_name(args, task, split, adapter_dir)
    return EvalPlan(args, resolved, root, config_path, shards, task, template, source, split, pixels, budget,
                    adapter_dir, data, data.info, adapter_info(adapter_dir), run_name, root / "evals" / run_name)


def run_eval(args: EvalArgs, resolved: dict | None = None, root=None, config_path: str | None = None,
             model_and_processor=None, typed: frozenset = frozenset()) -> dict:
    """Evaluate; returns `{"run_dir", "metrics", "new", "reused"}`. See the module docstring for the files.

    Sharded (`--num_shards N --shard_index i`, or one shard per process under `accelerate launch`):
    this process scores batches b with b % N == i into `shards/`, and the merge (by the main process
    of a launch, else by whichever shard finishes last) writes one predictions.jsonl in example order
    and the metrics; a shard that merges nothing returns `metrics` None.

    `typed`: the options typed on the command line (`parse_config`'s `cli_keys`); a task typed there
    brings its own dataset unless the source is typed too (`scoring.tasks.choose_data`, printed).
    """
    import torch


    seed_everything(args.seed)
    if shard_plan(args).launched:
        _launch_state(shard_plan(args).count)  # joins the launcher's process group before anything waits on it
    plan = plan_eval(args, resolved, root, config_path, typed)
    then = "run the same command again: it continues from the predictions already saved"
    before = torch.get_num_threads()
    plan.threads = apply_torch_threads(args.torch_threads, feed_workers(args))  # a caller's own setting is restored
    try:
        # One process per run (per shard when sharded) for the whole eval: two would append the same uids.
        # A failed start removes the run dir it made; not for shards, which may share a run dir being set up.
        with disk_full_guard(plan.run_dir, then), eval_lock(plan.run_dir, plan.shards), removed_if_start_fails(
                [(plan.run_dir, _only_setup_files)], enabled=not plan.shards.active):
            return _run(plan, model_and_processor)
    finally:
        torch.set_num_threads(before)


def _run(plan: EvalPlan, model_and_processor=None) -> dict:
    """The eval once its run lock is held: check the run dir, load, record, score this shard, finish or merge."""
    _check_run_dir(plan)
    model, processor, decoding = _load_model(plan, model_and_processor)
    _record_session(plan, decoding)
    scored = _score(plan, model, processor)
    if not scored.order:

        if scored.tb is not None:
            scored.tb.close()
        raise VLMStudiesError(f"task {plan.task.name} has no examples in {plan.data_info.get('source')} "
                              f"[{plan.split}]: {no_examples_reason(plan.task, plan.data, scored.feed)}; check "
                              f"--source/--split/--task")
    if not plan.shards.active:
        return _finish([scored.done[u] for u in scored.order], scored.tb, scored.new, scored.reused, scored.elapsed,
                       **_context(plan, decoding))
    return _finish_shard(plan, scored, decoding)


def _context(plan: EvalPlan, decoding) -> dict:
    return dict(run_dir=plan.run_dir, run_name=plan.run_name, args=plan.args, task=plan.task, template=plan.template,
                split=plan.split, data=plan.data, data_info=plan.data_info, ad_info=plan.ad_info, budget=plan.budget,
                decoding=decoding)


def _check_run_dir(plan: EvalPlan) -> None:
    """Refuse a finished run with other options or a run dir of another eval; record this eval's identity."""

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    ident = eval_identity(plan.args, plan.task, plan.template, plan.split, plan.data_info, plan.ad_info, plan.pixels)
    if not plan.shards.launched or plan.shards.index == 0:
        check_finished(plan.run_dir, finished_with(plan.args), plan.args.overwrite)
        check_identity(plan.run_dir, ident, plan.args.overwrite)
        atomic_write_json(plan.run_dir / IDENTITY_FILE, ident)
    _barrier(plan.shards)


def _load_model(plan: EvalPlan, model_and_processor=None):
    """`(model, processor, decoding)`: loaded (adapter merged when asked), or the caller's with the run's budget."""

    args = plan.args
    if model_and_processor is None:

        model, processor = load_model_and_processor(
            args.model, adapter=str(plan.adapter_dir) if plan.adapter_dir else None, dtype=args.dtype,
            load_in_4bit=args.load_in_4bit, min_pixels=plan.pixels[0], max_pixels=plan.pixels[1],
            attn_implementation=args.attn_implementation, root=plan.root)
        if plan.adapter_dir and args.merge_adapter:
            model = merge_adapter(model)
    else:
        model, processor = model_and_processor
        set_pixel_limits(processor, *plan.pixels)  # the run's budget, whatever the caller's processor had
    model.eval()
    decoding = None
    if args.answer_mode == "generate":

        decoding = {**describe(generation_config(processor, args.max_new_tokens), "lab"),
                    "checkpoint_settings_not_used": ignored_checkpoint_settings(model)}
    return model, processor, decoding


def _record_session(plan: EvalPlan, decoding) -> None:
    """config.yaml (by the leading process) and this session's entry in run_meta.json."""
    from evals.feed import FEED_VERSION

    args, shards = plan.args, plan.shards
    # The shard options are left out of config.yaml: every shard writes the same file, and re-running it (or
    # scripts/reproduce.py) in one process gives the same predictions.
    resolved = {k: v for k, v in dict(plan.resolved or dataclasses.asdict(args)).items()
                if k not in ("num_shards", "shard_index")}
    resolved.update(run_name=plan.run_name, split=plan.split, source=plan.source, min_pixels=plan.pixels[0],
                    max_pixels=plan.pixels[1])
    if plan.leads:
        save_resolved(resolved, plan.run_dir / "config.yaml",
                      header="resolved options of this eval; re-run it with:\n" + " ".join(["python", *sys.argv]))
    session = {"run_name": plan.run_name, "task": plan.task.tag, "template": plan.template.tag,
               "answer_mode": args.answer_mode, "batch_size": args.batch_size, "dataset": plan.data_info,
               "adapter": plan.ad_info, "config_file": plan.config_path, "pixel_budget": plan.budget,
               "decoding": decoding, "torch_threads": plan.threads,
               "feed": {"version": FEED_VERSION, "num_workers": feed_workers(args),
                        "encoded_in_workers": not shards.active}}
    if shards.active:
        session["shard"] = {"index": shards.index, "count": shards.count, "launched": shards.launched}
    with locked(plan.run_dir / "run_meta.json"):  # shards of one run share the file
        _session_meta(plan.run_dir, args, session)


def _score(plan: EvalPlan, model, processor) -> ShardScore:
    """Walk the example stream batch by batch; predict this shard's batches not fully on disk, append them."""
    from evals.feed import Feed, batch_inputs

    args, shards, task, template = plan.args, plan.shards, plan.task, plan.template
    pred_path = plan.run_dir / FILENAME
    done = {r["uid"]: r for r in read_predictions(pred_path, repair=not shards.active)}
    out_path = pred_path
    if shards.active:
        out_path, done_path = shard_paths(plan.run_dir, shards.index, shards.count)
        done_path.unlink(missing_ok=True)
        done.update({r["uid"]: r for r in read_predictions(out_path, repair=True)})
    n_known = plan.data.num_rows() if task.keep is None else None
    if n_known is not None and shards.active:
        n_known = -(-n_known // shards.count)
    bar = _progress(n_known, 0, args.progress)
    tb = _tb_writer(plan.run_dir, args.tensorboard) if not shards.active else None
    order, seen, new, reused, t0 = [], set(), 0, 0, time.time()
    mine, correct_so_far = 0, 0
    # a sharded run encodes only its own batches (here); every example is read in every shard to agree on them
    feed = Feed(plan.data, task, template, processor, num_workers=feed_workers(args),
                limit=args.limit if task.keep else None, encode=not shards.active, skip_encode=frozenset(done),
                batch_size=args.batch_size)
    try:
        with PredictionWriter(out_path) as writer:
            for b, fed in enumerate(feed.batches()):
                batch = [ex for ex, _ in fed]
                uids = [ex.uid for ex in batch]
                dup = seen.intersection(uids)
                if dup or len(set(uids)) < len(uids):
                    raise VLMStudiesError(f"uid {sorted(dup or uids)[0]} occurs twice in "
                                          f"{plan.data_info.get('source')} [{plan.split}]; uids must be unique to "
                                          f"evaluate and resume")
                order += uids
                seen.update(uids)
                if b % shards.count != shards.index:
                    continue  # another shard's batch (every shard walks the stream, so all agree on the batches)
                missing = [ex for ex in batch if ex.uid not in done]
                if missing:
                    # the whole batch again (same padding as an uninterrupted run); only the gaps are written
                    records = _predict_or_explain(model, processor, task, template, batch, args,
                                                  batch_inputs(processor, task, template, fed))
                    fresh = [r for r in records if r["uid"] not in done]
                    writer.append(fresh)
                    done.update({r["uid"]: r for r in fresh})
                    new += len(fresh)
                reused += len(batch) - len(missing)
                mine += len(batch)
                correct_so_far += sum(done[u]["correct"] for u in uids)
                bar.update(len(batch))
                bar.set_postfix(acc=f"{correct_so_far / mine:.3f}", new=new, refresh=False)
                if tb is not None and missing:
                    tb.add_scalar("progress/running_accuracy", correct_so_far / len(order), len(order))
    except BaseException:
        if tb is not None:
            tb.close()  # no open events file left behind (Windows could not remove a failed start's run dir)
        raise
    finally:
        bar.close()
    return ShardScore(order, done, new, reused, mine, time.time() - t0, tb, feed)


def _finish_shard(plan: EvalPlan, scored: ShardScore, decoding) -> dict:
    """Mark this shard done, wait for the others (a launch) and merge: the launch's main process, or by hand
    whichever shard finishes last; the merging process writes the metrics."""

    args, shards, run_dir = plan.args, plan.shards, plan.run_dir
    _, done_path = shard_paths(run_dir, shards.index, shards.count)
    atomic_write_json(done_path, {"shard_index": shards.index, "num_shards": shards.count,
                                  "batch_size": args.batch_size, "examples_scored": scored.mine, "new": scored.new,
                                  "seconds": round(scored.elapsed, 2), "order": scored.order})
    print(f"[eval] shard {shards.index} of {shards.count}: {scored.mine} examples ({scored.new} new) in "
          f"{scored.elapsed:.1f}s", file=sys.stderr)
    records = None
    _barrier(shards)
    if not shards.launched or shards.index == 0:
        with locked(run_dir / SHARDS_DIR / "merge"):  # by hand: whichever shard finishes last merges
            records = merge_shards(run_dir, shards.count)
    result = {"run_dir": run_dir, "metrics": None, "new": scored.new, "reused": scored.reused, "shard": shards.index}
    if records is not None:
        result = _finish(records, _tb_writer(run_dir, args.tensorboard), scored.new, scored.reused, scored.elapsed,
                         **_context(plan, decoding))
        result["shard"] = shards.index
    elif not shards.launched:
        waiting = [i for i in range(shards.count) if not shard_paths(run_dir, i, shards.count)[1].is_file()]
        print(f"[eval] waiting for shard(s) {waiting} of {run_dir}; the last one to finish merges the predictions",
              file=sys.stderr)
    _barrier(shards)
    return result


def _finish(records, tb, new, reused, elapsed, *, run_dir, run_name, args, task, template, split, data, data_info,
            ad_info, budget, decoding) -> dict:
    """metrics.json, TensorBoard scalars and the printed summary from the run's records (example order)."""

    metrics = compute_metrics(records, bins=args.ece_bins)
    bad = getattr(data, "bad_rows", [])
    split_rows = data_info.get("num_rows")
    if split_rows is None and hasattr(data, "num_rows"):
        split_rows = data.num_rows()  # the split's size where the source knows it (manifest, parquet metadata)
    summary = {
        "run_name": run_name, "task": task.tag, "template": template.tag, "answer_mode": args.answer_mode,
        "model": args.model, "adapter": ad_info and ad_info["path"], "split": split,
        # the data actually read (not the task's default, nor what a config said before the command line won)
        "dataset": {**{k: data_info.get(k) for k in ("source", "source_kind", "split", "revision", "fingerprint",
                                                     "manifest_sha256", "num_rows") if data_info.get(k) is not None},
                    **({"num_rows": split_rows} if split_rows is not None else {}),
                    "rows_evaluated": len(records), "rows_skipped_bad": len(bad)},
        "limit": args.limit, "ece_bins": args.ece_bins, "skipped_bad_rows": len(bad),
        "bad_rows": [list(b) for b in bad[:20]], "pixel_budget": budget, "decoding": decoding,
        **metrics,
    }
    vis = [r["visual_tokens"] for r in records if r.get("visual_tokens") is not None]
    summary["visual_tokens_per_example"] = round(sum(vis) / len(vis), 2) if vis else None
    atomic_write_json(run_dir / "metrics.json", summary)
    with locked(run_dir / "run_meta.json"):
        _session_results(run_dir, {"eval_seconds": round(elapsed, 2), "new": new, "reused": reused,
                                   **peak_memory()})
    if tb is not None:
        cal = metrics["calibration"] or {}
        for tag, value in (("accuracy", metrics["accuracy"]), ("consistency", metrics["consistency"]["consistency"]),
                           ("consistency_groups", metrics["consistency"]["groups"]),
                           ("invalid_rate", metrics["invalid_rate"]), ("share_pred_true", metrics["share_pred_true"]),
                           ("majority_baseline", metrics["majority_baseline"]["accuracy"]), ("ece", cal.get("ece")),
                           ("auroc", cal.get("auroc"))):
            if value is not None:
                tb.add_scalar(f"eval/{tag}", value, len(records))
        tb.close()
    rate = new / elapsed if elapsed > 0 and new else 0.0
    print(format_summary(summary, run_dir, new, reused, rate))
    return {"run_dir": run_dir, "metrics": summary, "new": new, "reused": reused, "examples_per_s": rate}


def _session_results(run_dir: Path, results: dict) -> None:
    """Add what the last session measured (time, peak memory) to its entry in run_meta.json."""

    path = run_dir / "run_meta.json"
    meta = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"sessions": [{}]}
    meta["sessions"][-1]["results"] = results
    atomic_write_json(path, meta)


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_summary(m: dict, run_dir: Path, new: int, reused: int, rate: float) -> str:
    ci = m.get("accuracy_ci95")
    cal = m.get("calibration") or {}
    lines = [
        f"{m['task']} [{m['split']}] {m['model']}{' + ' + m['adapter'] if m.get('adapter') else ''} "
        f"({m['answer_mode']} mode, {m['template']}): {m['n']} examples ({new} new at {rate:.1f} ex/s, {reused} reused)",
        f"  accuracy {_pct(m['accuracy'])}" + (f" (95% CI {_pct(ci[0])}-{_pct(ci[1])})" if ci else "")
        + f"   consistency {_pct(m['consistency']['consistency'])} of {m['consistency']['groups']} sentence groups"
        + (f" ({m['consistency']['ungrouped_rows']} rows without an NLVR2 identifier, one group each)"
           if m['consistency'].get('ungrouped_rows') else "")
        + "   majority baseline "
        f"{_pct(m['majority_baseline']['accuracy'])}   invalid {m['invalid']} ({_pct(m['invalid_rate'])})"
        + (f"   ECE {cal['ece']:.3f}" if cal.get("ece") is not None else "")
        + (f"   AUROC {cal['auroc']:.3f}" if cal.get("auroc") is not None else ""),
        f"  outputs: {run_dir} (report: python scripts/analyze.py {run_dir})",
    ]
    lines.insert(1, f"  data: {data_line(m)}; pixels: {budget_line(m)}")
    return "\n".join(lines)


def data_line(m: dict) -> str:
    """The data a run read, from its metrics.json: source [split], version, rows."""
    d = m.get("dataset") or {}
    version = d.get("revision") and f"revision {d['revision']}" or d.get("fingerprint") and \
        f"fingerprint {str(d['fingerprint'])[:12]}" or "unversioned"
    rows = d.get("rows_evaluated", m.get("n"))
    return f"{d.get('source', '?')} [{d.get('split', m.get('split'))}], {version}, {rows} rows evaluated" + \
        (f" of {d['num_rows']}" if d.get("num_rows") and d["num_rows"] != rows else "")


def budget_line(m: dict) -> str:
    """The pixel budget of a run and the visual tokens it gave, from its metrics.json."""
    b = m.get("pixel_budget")
    if not b:
        return "not recorded (a run from before pixel budgets were recorded)"
    vis = m.get("visual_tokens_per_example")
    return (f"min {b['min_pixels']} max {b['max_pixels']} ({b['max_visual_tokens_per_image']} visual tokens per image "
            f"at most; {b['from']}), {vis if vis is not None else 'n/a'} visual tokens per example")
