"""One eval run: a task's examples through a model (+ adapter) into predictions, metrics and metadata.

    <root>/evals/<run_name>/
        predictions.jsonl   one line per example (schema in `make_record`), appended per batch
        metrics.json        every metric of `evals.metrics.compute_metrics` + what was evaluated
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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import VLMStudiesError

ANSWER_MODES = ("score", "generate")
IDENTITY_FILE = "eval_identity.json"


@dataclass
class EvalArgs:
    """Options of one eval run (YAML under evals/configs/, each overridable with --key value)."""

    model: str = field(default="local:small", metadata={
        "help": "base model: Hub id (Qwen/Qwen2-VL-2B-Instruct), local folder, or local:tiny / local:small"})
    adapter: str | None = field(default=None, metadata={
        "help": "LoRA adapter: an adapter folder, a training run dir, or a run name under <root>/checkpoints/"})
    task: str = field(default="nlvr2", metadata={"help": "registered task (see evals/tasks/); e.g. nlvr2, "
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
    min_pixels: int | None = field(default=None, metadata={"help": "image resize lower bound (pixels)"})
    max_pixels: int | None = field(default=None, metadata={
        "help": "image resize upper bound (pixels); 512*28*28=401408 keeps an NLVR2 pair near 1,000 visual tokens"})
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

    def __post_init__(self):
        if self.answer_mode not in ANSWER_MODES:
            raise ValueError(f"answer_mode must be score or generate, not '{self.answer_mode}'")
        if self.mode not in ("streaming", "cached"):
            raise ValueError(f"mode must be streaming or cached, not '{self.mode}'")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of examples, not {self.limit}")
        if self.merge_adapter and self.load_in_4bit:
            raise ValueError("merge_adapter cannot merge into a 4-bit base without rounding the weights; set "
                             "merge_adapter false, or load the base in full precision (load_in_4bit false)")
        if self.run_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@+-]*", self.run_name):
            raise ValueError(f"run_name '{self.run_name}' must be one folder name (letters, digits, . _ - @ +)")


# ----------------------------------------------------------------------------- naming and identity

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def resolve_adapter(adapter: str | None, root: Path) -> Path | None:
    """An adapter folder, a training run dir, or a run name under `<root>/checkpoints/` -> adapter folder."""
    from utils.models import resolve_adapter_dir

    if not adapter:
        return None
    path = Path(adapter).expanduser()
    if not path.exists() and not path.is_absolute() and (root / "checkpoints" / adapter).exists():
        path = root / "checkpoints" / adapter
    return resolve_adapter_dir(path)


def adapter_label(adapter_dir: Path | None) -> str:
    if adapter_dir is None:
        return "zeroshot"
    from utils.models import ADAPTER_SUBDIR

    return adapter_dir.parent.name if adapter_dir.name == ADAPTER_SUBDIR else adapter_dir.name


def default_run_name(args: EvalArgs, task, split: str, adapter_dir: Path | None) -> str:
    model = args.model.rstrip("/").split("/")[-1]
    return "-".join(_slug(x) for x in (model, adapter_label(adapter_dir), task.name, split, args.answer_mode))


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def adapter_info(adapter_dir: Path | None) -> dict | None:
    if adapter_dir is None:
        return None
    weights = [p for p in ("adapter_model.safetensors", "adapter_model.bin") if (adapter_dir / p).is_file()]
    info = {"path": str(adapter_dir), "weights_sha256": _file_sha256(adapter_dir / weights[0]) if weights else None}
    for name in ("base_model.json", "adapter_config.json"):
        if (adapter_dir / name).is_file():
            cfg = json.loads((adapter_dir / name).read_text())
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


def eval_identity(args: EvalArgs, task, template, split: str, data_info: dict, adapter: dict | None) -> dict:
    """Everything that decides the predictions: a run dir's predictions must all share it.

    Left out on purpose: `limit` (a longer --limit extends a run), the data `mode` (streaming and
    cached loading yield identical examples) and `batch_size` (after running out of GPU memory, the
    same run continues with a smaller batch; results then differ from an unbroken run only by
    padding numerics, and run_meta.json records each session's batch size).
    """
    from evals.parser import PARSER_VERSION
    from evals.slices import SLICES_VERSION

    ident = {"model": args.model, "adapter_weights_sha256": adapter and adapter["weights_sha256"],
             "task": task.tag, "template": template.tag, "answer_mode": args.answer_mode,
             "source": data_info.get("source"), "split": split,
             "data_fingerprint": data_info.get("fingerprint") or data_info.get("revision"),
             "dtype": args.dtype, "load_in_4bit": args.load_in_4bit,
             "min_pixels": args.min_pixels, "max_pixels": args.max_pixels,
             "attn_implementation": args.attn_implementation, "slices_version": SLICES_VERSION,
             "merge_adapter": bool(args.merge_adapter and adapter)}
    if args.answer_mode == "generate":
        ident.update(max_new_tokens=args.max_new_tokens, parser_version=PARSER_VERSION)
    return ident


def check_identity(run_dir: Path, ident: dict, overwrite: bool) -> None:
    """Refuse to mix predictions of two different evals in one run dir (unless told to start over)."""
    from evals.predictions import FILENAME

    path = run_dir / IDENTITY_FILE
    has_predictions = (run_dir / FILENAME).is_file() and (run_dir / FILENAME).stat().st_size > 0
    if path.is_file() and has_predictions:
        old = json.loads(path.read_text())
        diff = [k for k in sorted(set(old) | set(ident)) if old.get(k) != ident.get(k)]
        if diff and not overwrite:
            shown = "; ".join(f"{k}: {old.get(k)!r} -> {ident.get(k)!r}" for k in diff[:4])
            raise VLMStudiesError(f"run dir {run_dir} holds predictions of a different eval ({shown}); pass another "
                                  f"--run_name, or --overwrite true to delete them and start over")
        if diff:
            for name in (FILENAME, "metrics.json"):
                (run_dir / name).unlink(missing_ok=True)
    elif has_predictions and not path.is_file() and not overwrite:
        raise VLMStudiesError(f"run dir {run_dir} holds {FILENAME} without {IDENTITY_FILE}, so it cannot be resumed "
                              f"safely; pass another --run_name, or --overwrite true to start over")
    elif has_predictions and overwrite:
        (run_dir / FILENAME).unlink()


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


def predict_batch(model, processor, task, template, examples: list, args: EvalArgs) -> list[dict]:
    """Records for one batch in the chosen answer mode (one schema for both)."""
    from evals.scoring import generate_batch, score_batch

    if args.answer_mode == "score":
        outs = score_batch(model, processor, examples, template, to_inputs=task.to_inputs)
        for o in outs:
            o["valid"] = True
    else:
        outs = generate_batch(model, processor, examples, template, args.max_new_tokens, parse=task.parse_response,
                              to_inputs=task.to_inputs)
    return [make_record(task, template, args.answer_mode, ex, o) for ex, o in zip(examples, outs)]


# ----------------------------------------------------------------------------- the run

def _predict_or_explain(model, processor, task, template, batch, args) -> list[dict]:
    import torch

    try:
        return predict_batch(model, processor, task, template, batch, args)
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

    return tqdm(total=total, initial=initial, unit="ex", desc="eval", disable=not enabled, dynamic_ncols=True,
                smoothing=0.1, file=sys.stderr)


def _session_meta(run_dir: Path, args: EvalArgs, extra: dict) -> None:
    from utils.io import atomic_write_json
    from utils.run_meta import run_metadata

    path = run_dir / "run_meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {"sessions": []}
    meta["sessions"].append(run_metadata(args.seed, **extra))
    meta.update({k: v for k, v in meta["sessions"][0].items() if k not in ("sessions",)})  # first session on top
    meta["resumed"] = len(meta["sessions"]) > 1
    atomic_write_json(path, meta)


def run_eval(args: EvalArgs, resolved: dict | None = None, root=None, config_path: str | None = None,
             model_and_processor=None) -> dict:
    """Evaluate; returns `{"run_dir", "metrics", "new", "reused"}`. See the module docstring for the files."""
    from evals.metrics import compute_metrics
    from evals.predictions import FILENAME, PredictionWriter, read_predictions
    from evals.scoring import batched
    from evals.tasks import get_task
    from utils.config import save_resolved
    from utils.io import atomic_write_json
    from utils.paths import get_root
    from utils.seed import seed_everything
    from vlm_datasets.prompts import get_template

    seed_everything(args.seed)
    task = get_task(args.task)
    template = get_template(args.template)
    if args.require_adapter and not args.adapter:
        raise VLMStudiesError("this config evaluates a fine-tuned model: pass --adapter RUN (a training run name under "
                              "<root>/checkpoints/, a run dir, or an adapter folder)")
    root = get_root(root)
    split = args.split or task.default_split
    adapter_dir = resolve_adapter(args.adapter, root)  # before any slow loading: a bad path fails at once
    data, examples = task.load(args.source, split, args.mode, root=root, limit=args.limit, on_error=args.on_error)
    data_info = data.info
    ad_info = adapter_info(adapter_dir)
    run_name = args.run_name or default_run_name(args, task, split, adapter_dir)
    run_dir = root / "evals" / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    ident = eval_identity(args, task, template, split, data_info, ad_info)
    check_identity(run_dir, ident, args.overwrite)

    if model_and_processor is None:
        from utils.models import load_model_and_processor

        model, processor = load_model_and_processor(args.model, adapter=str(adapter_dir) if adapter_dir else None,
                                                    dtype=args.dtype, load_in_4bit=args.load_in_4bit,
                                                    min_pixels=args.min_pixels, max_pixels=args.max_pixels,
                                                    attn_implementation=args.attn_implementation, root=root)
        if adapter_dir and args.merge_adapter:
            model = merge_adapter(model)
    else:
        model, processor = model_and_processor
    model.eval()

    atomic_write_json(run_dir / IDENTITY_FILE, ident)
    resolved = dict(resolved or dataclasses.asdict(args), run_name=run_name, split=split,
                    source=args.source or task.default_source)
    save_resolved(resolved, run_dir / "config.yaml",
                  header="resolved options of this eval; re-run it with:\n" + " ".join(["python", *sys.argv]))
    _session_meta(run_dir, args, {"run_name": run_name, "task": task.tag, "template": template.tag,
                                  "answer_mode": args.answer_mode, "batch_size": args.batch_size,
                                  "dataset": data_info, "adapter": ad_info, "config_file": config_path})

    pred_path = run_dir / FILENAME
    done = {r["uid"]: r for r in read_predictions(pred_path, repair=True)}
    n_known = data.num_rows() if task.keep is None else None
    bar = _progress(n_known, 0, args.progress)
    tb = _tb_writer(run_dir, args.tensorboard)
    order, new, reused, t0 = [], 0, 0, time.time()
    correct_so_far = 0
    try:
        with PredictionWriter(pred_path) as writer:
            for batch in batched(examples, args.batch_size):
                uids = [ex.uid for ex in batch]
                dup = set(uids) & set(order)
                if dup or len(set(uids)) < len(uids):
                    raise VLMStudiesError(f"uid {sorted(dup or uids)[0]} occurs twice in {data_info.get('source')} "
                                          f"[{split}]; uids must be unique to evaluate and resume")
                order += uids
                missing = [ex for ex in batch if ex.uid not in done]
                if missing:
                    # the whole batch again (same padding as an uninterrupted run); only the gaps are written
                    records = _predict_or_explain(model, processor, task, template, batch, args)
                    fresh = [r for r in records if r["uid"] not in done]
                    writer.append(fresh)
                    done.update({r["uid"]: r for r in fresh})
                    new += len(fresh)
                reused += len(batch) - len(missing)
                correct_so_far += sum(done[u]["correct"] for u in uids)
                bar.update(len(batch))
                bar.set_postfix(acc=f"{correct_so_far / len(order):.3f}", new=new, refresh=False)
                if tb is not None and missing:
                    tb.add_scalar("progress/running_accuracy", correct_so_far / len(order), len(order))
    finally:
        bar.close()
    elapsed = time.time() - t0

    records = [done[u] for u in order]
    if not records:
        raise VLMStudiesError(f"task {task.name} has no examples in {data_info.get('source')} [{split}]"
                              f"{' (all rows were bad)' if data.bad_rows else ''}; check --source/--split/--task")
    metrics = compute_metrics(records, bins=args.ece_bins)
    bad = getattr(data, "bad_rows", [])
    summary = {
        "run_name": run_name, "task": task.tag, "template": template.tag, "answer_mode": args.answer_mode,
        "model": args.model, "adapter": ad_info and ad_info["path"], "split": split,
        "dataset": {k: data_info.get(k) for k in ("source", "source_kind", "split", "revision", "fingerprint",
                                                  "manifest_sha256", "num_rows") if data_info.get(k) is not None},
        "limit": args.limit, "skipped_bad_rows": len(bad), "bad_rows": [list(b) for b in bad[:20]],
        **metrics,
    }
    atomic_write_json(run_dir / "metrics.json", summary)
    if tb is not None:
        cal = metrics["calibration"] or {}
        for tag, value in (("accuracy", metrics["accuracy"]), ("consistency", metrics["consistency"]["consistency"]),
                           ("invalid_rate", metrics["invalid_rate"]), ("share_pred_true", metrics["share_pred_true"]),
                           ("majority_baseline", metrics["majority_baseline"]["accuracy"]), ("ece", cal.get("ece")),
                           ("auroc", cal.get("auroc"))):
            if value is not None:
                tb.add_scalar(f"eval/{tag}", value, len(records))
        tb.close()
    rate = new / elapsed if elapsed > 0 and new else 0.0
    print(format_summary(summary, run_dir, new, reused, rate))
    return {"run_dir": run_dir, "metrics": summary, "new": new, "reused": reused, "examples_per_s": rate}


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_summary(m: dict, run_dir: Path, new: int, reused: int, rate: float) -> str:
    ci = m.get("accuracy_ci95")
    cal = m.get("calibration") or {}
    lines = [
        f"{m['task']} [{m['split']}] {m['model']}{' + ' + m['adapter'] if m.get('adapter') else ''} "
        f"({m['answer_mode']} mode, {m['template']}): {m['n']} examples ({new} new at {rate:.1f} ex/s, {reused} reused)",
        f"  accuracy {_pct(m['accuracy'])}" + (f" (95% CI {_pct(ci[0])}-{_pct(ci[1])})" if ci else "")
        + f"   consistency {_pct(m['consistency']['consistency'])}   majority baseline "
        f"{_pct(m['majority_baseline']['accuracy'])}   invalid {m['invalid']} ({_pct(m['invalid_rate'])})"
        + (f"   ECE {cal['ece']:.3f}" if cal.get("ece") is not None else "")
        + (f"   AUROC {cal['auroc']:.3f}" if cal.get("auroc") is not None else ""),
        f"  outputs: {run_dir} (report: python scripts/analyze.py {run_dir})",
    ]
    return "\n".join(lines)
