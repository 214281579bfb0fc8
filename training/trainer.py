"""One fine-tuning run: options -> run dir -> TRL SFTTrainer + PEFT -> adapter, accuracy, metadata.

    train(options)   # options: training.options.TrainOptions (scripts/train.py parses them)

Run dir `<root>/checkpoints/<run_name>/` (never overwritten; `--resume` continues it; one process per
run, by `<root>/checkpoints/.locks/<run_name>.lock`; a start that fails before the first checkpoint
removes the run dir it made, so the same command can simply be run again):

    config.yaml      every option actually used (resolved), headed by the command
    run_meta.json    git SHA + dirty flag, command, date, versions, device, seed, dataset source and
                     manifest hash, prompt template name + version, visual tokens per example, results
    accuracy.json    score-mode accuracy per family before and after training (share predicted True)
    dynamics.jsonl   with accuracy_eval_steps / occlusion_eval_steps: per-family accuracy and the occlusion
                     summary on a fixed validation subset at step 0 and every N steps (analyze.py draws it)
    checkpoint-N/    adapter weights + optimizer/scheduler/RNG state (no base weights), rotated
    adapter/         the final adapter with the processor files and base_model.json: loads on its own

TensorBoard events go to `<root>/logs/tb/<run_name>/` (loss, learning rate, grad norm, samples/s,
and accuracy when `accuracy_eval_steps` is set).

Under `accelerate launch` (training/configs/accelerate/: 2 CPU processes, DDP, FSDP, DeepSpeed ZeRO-2/3)
every process trains on its share of each batch; the main process alone creates the run dir, writes
config/metadata/accuracy and the final adapter, and scores accuracy, while the others wait at barriers.
`--dataset` names a task of the registry (scoring/tasks/): `vsr` trains on VSR rows (training/vsr_data.py)
instead of NLVR2's.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from transformers import Trainer, TrainerCallback
from trl import SFTTrainer

from scoring.predictions import PredictionWriter, read_predictions
from scoring.tasks import training_task
from utils.config import save_resolved
from utils.errors import VLMStudiesError, disk_full_guard
from utils.io import atomic_write_json, atomic_write_text, files_match, removed_if_start_fails, sha256_file
from utils.locks import run_lock
from utils.models import load_model_and_processor, write_base_model_record
from utils.paths import run_name_problem, subdir
from utils.run_meta import format_load, load_average_1m, peak_memory, run_metadata
from utils.seed import seed_everything
from vlm_datasets.prompts import budget_record, get_template
from training.data import GuardedCollator, ensure_cached, load_train_data
from training.evaluation import accuracy, accuracy as score_accuracy, fixed_subset, format_table, occlusion_summary
from training.flops import FlopCounter, peak_tflops
from training.model import (
    check_targets,
    load_for_training,
    lora_config,
    trainable_summary,
    vision_without_autograd,
    weights_dtype,
)
from training.vsr_data import load_vsr_train_data

ADAPTER_DIR = "adapter"
ACCURACY_FILE = "accuracy.json"
DYNAMICS_FILE = "dynamics.jsonl"  # per-family accuracy (and occlusion summary) on a fixed subset, over steps
CONFIG_FILE = "config.yaml"
META_FILE = "run_meta.json"
# Keys that may legitimately differ between the first launch of a run and its --resume.
RESUME_FREE_KEYS = {"run_name", "output_dir"}


# ----------------------------------------------------------------------------- the trainer

class VLMSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, logging samples/s with every loss, able to log extra scalars (accuracy), and adding up
    the model FLOPs of every batch it trains on (`flop_counter`, training/flops.py)."""

    _tp_mark: tuple[float, int] | None = None
    flop_counter = None

    def training_step(self, model, inputs, *args, **kwargs):
        if self.flop_counter is not None:
            self.flop_counter.add(inputs)
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            now, step = time.time(), self.state.global_step
            if self._tp_mark is not None and step > self._tp_mark[1] and now > self._tp_mark[0]:
                samples = (step - self._tp_mark[1]) * self.args.per_device_train_batch_size \
                    * self.args.gradient_accumulation_steps * self.args.world_size
                logs["samples_per_second"] = round(samples / (now - self._tp_mark[0]), 3)
            self._tp_mark = (now, step)
        super().log(logs, start_time)

    def log_extra(self, logs: dict) -> None:
        """Log scalars without flushing TRL's per-step training metrics (they belong to the next loss log).

        Logging resets `control.should_log`; called from a step-end callback, that would cancel the loss
        log due at the same step, so the flag is put back.
        """
        should_log = self.control.should_log
        Trainer.log(self, dict(logs))
        self.control.should_log = should_log

    def create_model_card(self, *args, **kwargs) -> None:
        """No TRL model card in the run dir: config.yaml and run_meta.json are the run's record."""

    def pause_throughput_clock(self, seconds: float) -> None:
        if self._tp_mark is not None:
            self._tp_mark = (self._tp_mark[0] + seconds, self._tp_mark[1])


class _ThroughputStart(TrainerCallback):
    def __init__(self, trainer_ref: list):
        self.trainer_ref = trainer_ref

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer_ref[0]._tp_mark = (time.time(), state.global_step)


class AccuracyCallback(TrainerCallback):
    """Training dynamics on a fixed subset: score-mode accuracy per family every `every` steps (logged as
    eval/accuracy_<family>) and, every `occlusion_every` steps, the occlusion summary (`evals.inside`: how
    P(True) moves when the left or right image is replaced). Both go, with the step, into the run dir's
    dynamics.jsonl (step 0 = before training), which `scripts/analyze.py RUN_DIR` draws."""

    def __init__(self, trainer_ref: list, processor, examples: list, template: str, batch_size: int, every: int,
                 occlusion_every: int = 0, path: Path | None = None):
        self.trainer_ref, self.processor, self.examples = trainer_ref, processor, examples
        self.template, self.batch_size, self.every = template, batch_size, every
        self.occlusion_every, self.path = occlusion_every, path

    def on_train_begin(self, args, state, control, **kwargs):
        if self.path is None:
            return
        old = read_predictions(self.path, repair=True, key="step")
        keep = [r for r in old if r["step"] <= state.global_step]
        if len(keep) < len(old):  # steps after the checkpoint we resume from are trained (and measured) again

            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        if state.global_step == 0 and not keep:
            self._measure(state, accuracy=bool(self.every), occlusion=bool(self.occlusion_every))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        due_acc = bool(self.every) and step % self.every == 0
        due_occ = bool(self.occlusion_every) and step % self.occlusion_every == 0
        if due_acc or due_occ:
            self._measure(state, due_acc, due_occ)

    def _measure(self, state, accuracy: bool, occlusion: bool) -> None:

        trainer = self.trainer_ref[0]
        t0 = time.time()
        record, logs = {"step": state.global_step, "epoch": state.epoch, "time": time.time()}, {}
        if accuracy:
            table = score_accuracy(trainer.model, self.processor, self.examples, self.template, self.batch_size)
            record["accuracy"] = table
            for fam, r in table.items():
                logs[f"eval_accuracy_{fam}"] = r["accuracy"]
                logs[f"eval_share_pred_true_{fam}"] = r["share_pred_true"]
            print(f"[train] step {state.global_step}: subset accuracy "
                  + ", ".join(f"{f} {r['accuracy']:.3f}" for f, r in table.items()), flush=True)
        if occlusion:
            summary = occlusion_summary(trainer.model, self.processor, self.examples, self.template, self.batch_size)
            record["occlusion"] = summary
            for g, e in summary.items():
                if g.startswith("family:"):
                    for side in ("left", "right"):
                        logs[f"eval_occlusion_{g[7:]}_{side}"] = e[side]["mean_abs_delta"]
            print(f"[train] step {state.global_step}: mean |dP(True)| with the left / right image replaced: "
                  + ", ".join(f"{g[7:]} {e['left']['mean_abs_delta']:.2f}/{e['right']['mean_abs_delta']:.2f}"
                              for g, e in summary.items() if g.startswith("family:")), flush=True)
        trainer.log_extra(logs)
        if self.path is not None:

            with PredictionWriter(self.path) as writer:
                writer.append([record])
        trainer.pause_throughput_clock(time.time() - t0)


# ----------------------------------------------------------------------------- run dir helpers

def default_run_name(config_path: str | None) -> str:
    stem = Path(config_path).stem if config_path else "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def checkpoint_step(path: Path) -> int | None:
    m = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(m.group(1)) if m else None


def complete(ckpt: Path) -> bool:
    """A checkpoint is complete once trainer_state.json (written last by the Trainer) parses."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        return (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()
    except (OSError, ValueError):
        return False


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones (a kill mid-save) are removed, with a note."""
    ckpts = sorted((p for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
                   key=checkpoint_step, reverse=True)
    for ckpt in ckpts:
        if complete(ckpt):
            return ckpt
        print(f"[train] removing incomplete {ckpt.name} (interrupted while saving)", file=sys.stderr)
        shutil.rmtree(ckpt)
    return None


def check_same_config(run_dir: Path, resolved: dict) -> None:
    import yaml

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise VLMStudiesError(f"{run_dir} has no {CONFIG_FILE}; it is not a training run dir, so it cannot be resumed")
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    now = json.loads(json.dumps(resolved, default=str))
    defaults = _option_defaults()
    # A key missing from an older run's config.yaml at its default value is an option added since, not a change.
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k)
                  and not (k not in saved and k in defaults and now.get(k) == defaults[k]))
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:4])
        if (run_dir / ADAPTER_DIR / "adapter_config.json").is_file():
            raise VLMStudiesError(f"run {run_dir.name} finished with other options than these ({shown}"
                                  f"{' ...' if len(diff) > 4 else ''} against its {CONFIG_FILE}); nothing was "
                                  f"changed: to train with them, drop --resume and pass a new --run_name")
        raise VLMStudiesError(f"--resume with options that differ from the run's {CONFIG_FILE} ({shown}"
                              f"{' ...' if len(diff) > 4 else ''}); resume with the original options, or start a "
                              f"new run")


def _option_defaults() -> dict:
    import dataclasses

    from training.options import DataOptions, LoraOptions, ModelOptions

    out = {}
    for t in (ModelOptions, LoraOptions, DataOptions):
        for f in dataclasses.fields(t):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
    return out


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# ----------------------------------------------------------------------------- the run

def build_trainer(model, processor, data, args, lora_opts, guard_limit: int | None, tb_dir=None, callbacks=()):
    """The SFTTrainer exactly as a run uses it: PEFT-wrapped model, TRL's vision collator behind our check, and
    a frozen vision tower that runs without autograd (`trainer.vision_no_grad`, None when the blocks train)."""

    # TRL must never truncate (it cuts image tokens silently); the length guard enforced the limit already.
    args.max_length = None
    # Our datasets yield exactly the collator's columns (images, prompt, completion) through a transform
    # over raw columns; the Trainer's column pruning would drop those raw columns and break the transform.
    args.remove_unused_columns = False
    env = _env("TENSORBOARD_LOGGING_DIR", str(tb_dir)) if tb_dir else contextlib.nullcontext()
    with env:  # read when the Trainer builds its TensorBoard callback
        trainer = VLMSFTTrainer(model=model, args=args, train_dataset=data.dataset, processing_class=processor,
                                peft_config=lora_config(lora_opts, model), callbacks=list(callbacks))
    trainer.data_collator = GuardedCollator(trainer.data_collator, processor, guard_limit)
    trainer.vision_no_grad = vision_without_autograd(trainer.model)  # after PEFT has frozen the base
    trainer.flop_counter = FlopCounter(trainer.model.config, lora_opts,
                                       vision_in_graph=trainer.vision_no_grad is None,
                                       checkpointing=bool(args.gradient_checkpointing))
    return trainer


def cost_results(trainer, args, seconds: float) -> dict:
    """What the run's compute bought: model FLOPs per part, TFLOP/s over `seconds`, MFU on a known GPU in bf16."""
    import torch


    peak = peak_tflops(torch.cuda.get_device_name(0)) if torch.cuda.is_available() and args.bf16 else None
    handle = trainer.vision_no_grad
    return {"flops": trainer.flop_counter.summary(seconds, peak),
            "vision_tower": handle.describe() if handle is not None else {"without_autograd": False}}


def train(options) -> dict:
    """Run (or resume) one fine-tuning job (`options`: a `training.options.TrainOptions`, which it completes
    with the run name, output dir and pixel budget it uses); returns the summary also written to run_meta.json.

    Under `accelerate launch` (several processes) every process trains its share of each batch, and
    only the main process writes the run dir (config, metadata, accuracy, final adapter) and scores
    accuracy; the others wait for it at barriers, so no file is written twice.
    """
    model_opts, lora_opts, data_opts, args = options.model, options.lora, options.data, options.args
    resolved = options.resolved
    # The pixel budget is always explicit and recorded (config.yaml, run_meta.json): the lab default for a bound
    # the config leaves unset, never the processor's own 16384*28*28.
    pixel_budget_info = budget_record(data_opts.min_pixels, data_opts.max_pixels)
    data_opts.min_pixels, data_opts.max_pixels = pixel_budget_info["min_pixels"], pixel_budget_info["max_pixels"]
    resolved.update(min_pixels=data_opts.min_pixels, max_pixels=data_opts.max_pixels)
    if args.output_dir not in (None, "trainer_output") and Path(args.output_dir).parent.name != "checkpoints":
        # A saved config.yaml records its run's <root>/checkpoints/<name>; it is replaced below. Anything else
        # would put checkpoints outside the root.
        raise VLMStudiesError("output_dir is set by the run (<root>/checkpoints/<run_name>); use --root and "
                              "--run_name instead")
    if options.resume and not args.run_name:
        raise VLMStudiesError("--resume needs --run_name NAME: the run dir under <root>/checkpoints/ to continue")
    dist = Distributed(args)
    # A default name carries the time: every process must use the main process's.
    run_name = args.run_name or dist.broadcast(default_run_name(options.config))
    if run_name_problem(run_name):
        raise VLMStudiesError(run_name_problem(run_name))
    run_dir = subdir("checkpoints", options.root) / run_name
    tb_dir = subdir("logs/tb", options.root) / run_name
    args.run_name, args.output_dir = run_name, str(run_dir)
    resolved.update(run_name=run_name, output_dir=str(run_dir))
    template = get_template(data_opts.template)

    def then() -> str:  # what to do after a full disk, as things stand when it happened
        if run_dir.is_dir():
            return (f"continue with the same command plus --run_name {run_name} --resume (it restarts from the latest "
                    f"complete checkpoint)")
        return "run the same command again (nothing of this run was kept: it had not saved a checkpoint yet)"

    # The main process alone holds the run lock (two processes training into one run dir would interleave
    # checkpoints) and may remove the run dir of a start that failed before its first checkpoint.
    lock = run_lock(run_dir.parent / ".locks" / f"{run_name}.lock", f"training run {run_dir}") \
        if dist.is_main else contextlib.nullcontext()
    with disk_full_guard(run_dir, then), lock, removed_if_start_fails(
            [(run_dir, _only_setup_files), (tb_dir, _only_events)], enabled=dist.is_main and not options.resume):
        return _run(model_opts, lora_opts, data_opts, args, resolved, options, dist, run_name, run_dir, tb_dir,
                    template, pixel_budget_info)


def _only_setup_files(run_dir: Path) -> bool:
    """A run dir holding its config and metadata but no checkpoint or adapter yet: nothing to resume from."""
    return files_match(run_dir, (CONFIG_FILE, META_FILE, ACCURACY_FILE, "*.tmp"))


def _only_events(tb_dir: Path) -> bool:
    return files_match(tb_dir, ("events.out.tfevents.*",))


def _run(model_opts, lora_opts, data_opts, args, resolved, options, dist, run_name, run_dir, tb_dir, template,
         pixel_budget_info) -> dict:
    """The run once its options are checked and its lock held (see `train`)."""
    import torch


    resume_from = None
    if options.resume:
        if not run_dir.is_dir():
            raise VLMStudiesError(f"no run dir {run_dir} to resume; drop --resume to start it")
        check_same_config(run_dir, resolved)  # a finished run too: a changed option is named, never ignored
        if (run_dir / ADAPTER_DIR / "adapter_config.json").is_file():
            print(f"[train] {run_name} already finished; its adapter is in {run_dir / ADAPTER_DIR}")
            return json.loads((run_dir / META_FILE).read_text(encoding="utf-8")).get("results", {})
        # Only the main process may remove an incomplete checkpoint; the others take its choice.
        resume_from = dist.broadcast(latest_checkpoint(run_dir) if dist.is_main else None)
        print(f"[train] resuming {run_name} from {resume_from.name if resume_from else 'the start (no checkpoint)'}")
    else:
        error = None
        if dist.is_main:
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                save_resolved(resolved, run_dir / CONFIG_FILE,
                              header=f"Resolved options of run {run_name}.\nRe-run: python scripts/train.py --config "
                                     f"{run_dir / CONFIG_FILE} --run_name NEW_NAME\nor: python scripts/reproduce.py "
                                     f"{run_dir}")
            except FileExistsError:
                error = (f"run dir {run_dir} already exists; add --resume to continue it, or choose another "
                         f"--run_name")
        error = dist.broadcast(error)
        if error:
            raise VLMStudiesError(error)

    if model_opts.torch_threads:
        torch.set_num_threads(model_opts.torch_threads)
    seed_everything(args.seed)
    with dist.main_first():  # the main process builds the local model / prepares the cache; the others then read
        model, processor = load_for_training(model_opts, data_opts, args, options.root)
        guard_limit = args.max_length
        data = load_data(data_opts, processor, guard_limit, args.seed, options.root)
        eval_split = load_eval_examples(data_opts, options.root, data_opts.eval_limit) if dist.is_main else None

    accuracy_path = run_dir / ACCURACY_FILE
    acc = json.loads(accuracy_path.read_text(encoding="utf-8")) if accuracy_path.is_file() else {}
    if eval_split is not None and "before" not in acc:
        t0 = time.time()
        acc = {"template": template.tag, "split": data_opts.eval_split,
               "before": accuracy(model, processor, eval_split, template.name, data_opts.eval_batch_size),
               "after": None}
        atomic_write_json(accuracy_path, acc)
        print(f"[train] accuracy before training ({time.time() - t0:.1f}s):")
        print(format_table(acc["before"], None), flush=True)
    dist.barrier()

    trainer_ref: list = [None]
    callbacks = [_ThroughputStart(trainer_ref)]
    watching = data_opts.accuracy_eval_steps or data_opts.occlusion_eval_steps
    if watching and eval_split is not None:  # main process only (eval_split is None elsewhere)
        subset = fixed_subset(load_eval_examples(data_opts, options.root, None), data_opts.accuracy_eval_size)
        callbacks.append(AccuracyCallback(trainer_ref, processor, subset, template.name, data_opts.eval_batch_size,
                                          data_opts.accuracy_eval_steps, data_opts.occlusion_eval_steps,
                                          run_dir / DYNAMICS_FILE))

    meta = run_metadata(
        args.seed, run_name=run_name, run_dir=str(run_dir), tensorboard_dir=str(tb_dir), model=model_opts.model,
        dataset={**data.info, "families": data_opts.families, "train_rows": data.rows,
                 "train_rows_per_family": dict(data.families)},
        prompt_template={"name": template.name, "version": template.version, "tag": template.tag},
        eval_dataset=eval_split.info if eval_split is not None else None,
        length_guard=data.length_stats(), pixel_budget=pixel_budget_info,
        resumed_from=str(resume_from) if resume_from else None,
        processes=dist.world_size, torch_threads=torch.get_num_threads())
    if dist.is_main:
        atomic_write_json(run_dir / META_FILE, meta)

    trainer = build_trainer(model, processor, data, args, lora_opts, guard_limit, tb_dir, callbacks)
    trainer_ref[0] = trainer
    adapted = check_targets(trainer.model, lora_opts)
    params = trainable_summary(trainer.model)
    if dist.is_main:
        print(f"[train] {run_name}: LoRA on {adapted}, {params['trainable_parameters']:,} trainable of "
              f"{params['total_parameters']:,} parameters; {dist.world_size} process(es); run dir {run_dir}; "
              f"TensorBoard {tb_dir}")
        print(f"[train] if interrupted, continue with the same command plus: --run_name {run_name} --resume",
              flush=True)

    load_start = load_average_1m()  # the machine may be shared: timings mean little without it
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_wall = time.time() - t0

    # The final adapter, written aside and renamed into place: adapter/ exists only when complete.
    final = run_dir / ADAPTER_DIR
    partial = run_dir / (ADAPTER_DIR + ".partial")
    if dist.is_main:
        shutil.rmtree(partial, ignore_errors=True)
    dist.barrier()
    # Every process calls save_model (FSDP / ZeRO-3 gather the sharded weights); only the main one writes.
    trainer.save_model(str(partial))  # adapter weights + config + the processor files
    if dist.is_main:
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle of the args; config.yaml says it all
        (partial / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
        write_base_model_record(partial, model_opts.model, trainer.model)
        os.replace(partial, final)
    dist.barrier()

    results = {
        "train_wall_seconds": round(train_wall, 2), "global_step": trainer.state.global_step,
        "train_runtime": result.metrics.get("train_runtime"),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "train_loss": result.metrics.get("train_loss"),
        "load_average_1m": [load_start, load_average_1m()],  # at start, at end (None on Windows)
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "processes": dist.world_size,
        **params, "lora_modules": adapted, "adapter_sha256": sha256_file(final / "adapter_model.safetensors"),
        **peak_memory(),
    }
    results.update(cost_results(trainer, args, train_wall))
    meta.update(results=results)
    trainer_steps = trainer.state.global_step
    del trainer, model
    trainer_ref[0] = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    if eval_split is not None:
        # After: the adapter as saved, on a freshly loaded base; proves it saves and reloads.
        reloaded, rproc = load_model_and_processor(model_opts.model, adapter=str(run_dir),
                                                   dtype=_dtype_name(model_opts, args),
                                                   load_in_4bit=model_opts.load_in_4bit,
                                                   min_pixels=data_opts.min_pixels, max_pixels=data_opts.max_pixels,
                                                   root=options.root)
        t1 = time.time()
        acc["after"] = accuracy(reloaded, rproc, eval_split, template.name, data_opts.eval_batch_size)
        atomic_write_json(accuracy_path, acc)
        results["eval_after_seconds"] = round(time.time() - t1, 2)
        print(f"[train] validation accuracy, score mode ({template.tag}, {data_opts.eval_split}):")
        print(format_table(acc.get("before"), acc["after"]))
        results["accuracy"] = {"before": acc.get("before"), "after": acc["after"]}
        del reloaded
    results.update(peak_memory())
    if dist.is_main:
        atomic_write_json(run_dir / META_FILE, meta)
        f = results["flops"]
        tf = {k: v / 1e12 for k, v in f["model_flops"].items()}
        print(f"[train] model FLOPs (training/flops.py): vision {tf['vision']:.4g} + language {tf['language']:.4g} + "
              f"LoRA {tf['lora']:.4g} = {tf['total']:.4g} TFLOP ({f['vision_patches']:,} patches, {f['lm_tokens']:,} "
              f"LM tokens), {f['model_tflop_per_s']} TFLOP/s, MFU {f['mfu_total'] or 'n/a (CPU, fp32 or unknown card)'}"
              + (f" (vision {f['mfu_vision']}, language {f['mfu_language']}; HFU {f['hfu']})" if f["mfu_total"] else ""))
        print(f"[train] done in {train_wall:.1f}s of training, {trainer_steps} steps "
              f"({results['train_samples_per_second']} samples/s, peak RSS {results['peak_rss_mib']} MiB, 1-min load "
              f"average {format_load(results['load_average_1m'][0])} -> {format_load(results['load_average_1m'][1])} on "
              f"{os.cpu_count()} cores); adapter: {final}", flush=True)
    dist.barrier()
    return results


def _row_formats() -> dict:
    """Row format (a task's `dataset`) -> (training-data builder, what a cached run prepares first or None)."""

    return {"nlvr2": (load_train_data, ensure_cached), "vsr": (load_vsr_train_data, None)}


def load_data(data_opts, processor, max_length, seed, root=None):
    """The training data of `data_opts.dataset`, built by the builder of its task's row format."""
    build, _ = _row_formats()[training_task(data_opts.dataset).dataset]
    return build(data_opts, processor, max_length, seed, root)


def load_eval_examples(data_opts, root=None, limit=None):
    """The `eval_split` examples for accuracy, read by the task's own loader (as evals reads them); None when
    evaluation is off."""
    if not data_opts.eval_split or str(data_opts.eval_split).lower() == "none":
        return None
    task = training_task(data_opts.dataset)
    _, prepare = _row_formats()[task.dataset]
    if data_opts.mode == "cached" and prepare is not None:
        prepare(data_opts.source, data_opts.eval_split, root)
    return task.load(data_opts.source, data_opts.eval_split, data_opts.mode, root=root, limit=limit,
                     min_pixels=data_opts.min_pixels, max_pixels=data_opts.max_pixels)[1]


class Distributed:
    """What a run needs of the other processes of an `accelerate launch`: barriers, main process first, broadcasts.

    accelerate's `PartialState` (the one the Trainer's arguments set up: gloo on CPU, NCCL on GPUs) does the
    work; every call is a no-op when the run is alone, so one code path serves both.
    """

    def __init__(self, args):
        from accelerate import PartialState

        self.world_size = int(args.world_size)  # reading it sets up the devices and the process group
        self.state = getattr(args, "distributed_state", None) or PartialState()
        self.is_main = self.state.is_main_process

    def barrier(self) -> None:
        self.state.wait_for_everyone()

    def broadcast(self, obj):
        """`obj` as the main process has it (pickled; small objects only)."""
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def main_first(self):
        return self.state.main_process_first()


def _dtype_name(model_opts, args) -> str:

    return weights_dtype(model_opts, args)
