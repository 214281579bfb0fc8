"""Ablations: a grid of cells, each a fine-tune + eval (or an eval alone), one table and plots.

    grid = load_grid("evals/configs/ablations/cpu_synthetic.yaml")
    run_grid(grid, root)          # what scripts/ablate.py calls

A grid file (YAML) names the base configs and what varies:

    name: cpu_synthetic                          # outputs in <root>/ablations/<name>/
    train_config: training/configs/smoke_cpu.yaml  # base options of every fine-tune
    eval_config: evals/configs/smoke_cpu.yaml      # base options of every eval
    base: {max_steps: 200}                       # overrides for every cell
    presets:                                     # named bundles of overrides, used as axis values
      task:
        nlvr2: {eval.task: nlvr2_synth_grounding}
        vsr: {train.dataset: vsr, train.families: [], eval.task: vsr_synth}
    grid: {task: [nlvr2, vsr], lora_r: [4, 32]}  # a cartesian product (or `grids:` a list of them)
    cells: [{task: vsr, finetune: false}]        # and/or an explicit list
    exclude: [{task: vsr, lora_r: 4}]            # drop cells matching all these values

Keys are options of scripts/train.py or scripts/evaluate.py. A key both have that means the same
thing in both (model, template, min_pixels, max_pixels, load_in_4bit, dtype, attn_implementation,
seed) goes to both, so a cell never evaluates with other pixels or another prompt than it trained
with; a key both have with different meanings (source, split, mode, ...) must be written
`train.KEY` or `eval.KEY`. `finetune: false` makes an eval-only (zero-shot) cell.

Each cell's training and eval run in a process of their own (`cell_job`, spawned): the library's
`training.trainer.train` and `evals.runner.run_eval` on the cell's options files, exactly what `python
scripts/train.py --config <cell>/train.yaml --run_name R` and `python scripts/evaluate.py --config
<cell>/eval.yaml --adapter <train run> --run_name R` call (the cell's state and report give those
commands, to re-run one cell by hand). A process per job returns its memory, GPU included, when it
ends. A grid with a `launcher` (accelerate launch, torchrun: they start programs) runs those scripts
under it instead. Every run dir holds its resolved config, seed and metadata, and
`scripts/reproduce.py` can re-run it. Run names carry a hash of the cell's
options: change a value and the cell is new, never a stale one reused. Rerunning the grid skips
finished cells and continues an interrupted one (`--resume` for its training; the eval resumes by
itself). Children die with the ablation (Linux), so a killed ablation leaves no orphan writing.

Outputs under `<root>/ablations/<name>/`: `cells/<cell>/` (train.yaml, eval.yaml, cell.json, logs),
`results.csv`, `results.md` (accuracy with 95% intervals, NLVR2 consistency with its group count,
visual tokens per example, train time, peak memory, links to run dirs; headed by commit, command and
hardware) and PNG plots (accuracy vs visual tokens, accuracy vs LoRA rank and any other numeric axis).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.config import dict_fields, known_fields, load_yaml, read_yaml_mapping, save_resolved
from utils.errors import VLMStudiesError
from utils.io import atomic_write_json, atomic_write_text, files_match
from utils.run_meta import device_info, git_info
from evals.runner import EvalArgs

REPO = Path(__file__).resolve().parent.parent
# Keys of both scripts that mean the same thing in both: a cell sets them for its fine-tune and its eval.
SHARED_KEYS = ("model", "template", "min_pixels", "max_pixels", "load_in_4bit", "dtype", "attn_implementation", "seed",
               "torch_threads")
# Set by the ablation itself.
RESERVED_KEYS = ("run_name", "output_dir", "adapter", "resume", "overwrite", "root", "config", "require_adapter",
                 "num_shards", "shard_index")
GRID_KEYS = ("name", "description", "train_config", "eval_config", "base", "presets", "grid", "grids", "cells",
             "exclude", "launcher", "eval_launcher")
CELL_FILE = "cell.json"


# ----------------------------------------------------------------------------- the grid

@dataclass
class Cell:
    """One ablation cell: its axis values (for the table), and the options of its fine-tune and eval."""

    axes: dict  # axis name -> value label, in grid order
    finetune: bool
    train: dict  # train overrides (on top of the train base config)
    eval: dict  # eval overrides
    cell_id: str = ""
    train_options: dict = field(default_factory=dict)  # resolved file content written to train.yaml
    eval_options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.axes.items()) or "base"


@dataclass
class Grid:
    name: str
    path: Path
    description: str
    train_config: Path | None
    eval_config: Path
    cells: list
    launcher: list
    eval_launcher: list
    axes: list  # axis names in order
    axis_keys: dict = field(default_factory=dict)  # axis -> the option names its values set


def _option_keys():
    """(training option names, eval option names)."""
    from training.options import OPTION_TYPES

    return set(known_fields(OPTION_TYPES)), set(known_fields((EvalArgs,)))


def route(overrides: dict, where: str, train_keys: set, eval_keys: set) -> tuple[dict, dict, bool | None]:
    """Split `{key: value}` into (train overrides, eval overrides, finetune or None)."""
    import difflib

    train, evals, finetune = {}, {}, None
    for key, value in overrides.items():
        side, _, name = key.rpartition(".")
        if key == "finetune":
            if not isinstance(value, bool):
                raise VLMStudiesError(f"finetune must be true or false in {where}, not {value!r}")
            finetune = value
            continue
        if name in RESERVED_KEYS:
            raise VLMStudiesError(f"'{key}' in {where} is set by the ablation itself (each cell gets its own run "
                                  f"names and adapter); remove it")
        if side not in ("", "train", "eval"):
            raise VLMStudiesError(f"'{key}' in {where}: a prefix must be train. or eval.")
        in_train, in_eval = name in train_keys, name in eval_keys
        if side == "train" and not in_train or side == "eval" and not in_eval or not (in_train or in_eval):
            pool = train_keys if side == "train" else eval_keys if side == "eval" else train_keys | eval_keys
            close = difflib.get_close_matches(name, sorted(pool), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            what = {"train": "a training option", "eval": "an eval option"}.get(side, "an option of train.py or "
                                                                                        "evaluate.py")
            raise VLMStudiesError(f"'{key}' in {where} is not {what}{hint}")
        if side == "train":
            train[name] = value
        elif side == "eval":
            evals[name] = value
        elif in_train and in_eval:
            if name not in SHARED_KEYS:
                raise VLMStudiesError(f"'{name}' in {where} is an option of both train.py and evaluate.py with "
                                      f"different meanings; write train.{name} or eval.{name}")
            train[name] = evals[name] = value
        elif in_train:
            train[name] = value
        else:
            evals[name] = value
    return train, evals, finetune


def _expand(axis: str, value, presets: dict, where: str) -> tuple[str, dict]:
    """(label, overrides) of one axis value: a preset's bundle, or the plain `{axis: value}`."""
    if axis in presets:
        if not isinstance(value, str) or value not in presets[axis]:
            raise VLMStudiesError(f"{where}: '{axis}' takes the presets {', '.join(map(str, presets[axis]))}, not "
                                  f"{value!r}")
        return value, dict(presets[axis][value] or {})
    label = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return label, {axis: value}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_.") or "x"


def _matches(axes_values: dict, rule: dict) -> bool:
    return all(k in axes_values and axes_values[k] == v for k, v in rule.items())


def read_spec(path: Path) -> dict:
    """The grid file's mapping, its keys checked."""
    spec = read_yaml_mapping(path, "grid file", "evals/configs/ablations/")
    unknown = [k for k in spec if k not in GRID_KEYS]
    if unknown:
        raise VLMStudiesError(f"unknown key(s) {unknown} in grid file {path}; a grid has {', '.join(GRID_KEYS)}")
    if not spec.get("eval_config"):
        raise VLMStudiesError(f"grid file {path} needs eval_config: the base options of every cell's eval")
    return spec


def base_config(spec: dict, key: str, path: Path) -> Path | None:
    """The base config file `spec[key]` names (relative to the repo unless it exists as given); None if unset."""
    if not spec.get(key):
        return None
    p = Path(spec[key])
    p = p if p.is_absolute() or p.is_file() else REPO / p
    if not p.is_file():
        raise VLMStudiesError(f"{key} {spec[key]} of grid {path} does not exist")
    return p


def axis_values(spec: dict, path: Path) -> tuple[list[dict], list[str]]:
    """`(cells, axes)`: every cell as `{axis: value}` (the grids' cartesian products, then the listed cells),
    and the axis names in order of first appearance."""
    blocks = spec.get("grids") or ([spec["grid"]] if spec.get("grid") else [])
    raw: list[dict] = []
    axes: list[str] = []
    for block in blocks:
        if not isinstance(block, dict) or not block:
            raise VLMStudiesError(f"each grid in {path} must be a mapping of key: [values]")
        keys = list(block)
        values = [v if isinstance(v, list) else [v] for v in block.values()]
        for combo in itertools.product(*values):
            raw.append(dict(zip(keys, combo)))
        axes += [k for k in keys if k not in axes]
    for cell in spec.get("cells") or []:
        if not isinstance(cell, dict):
            raise VLMStudiesError(f"each entry of cells: in {path} must be a mapping of key: value")
        raw.append(dict(cell))
        axes += [k for k in cell if k not in axes]
    if not raw:
        raise VLMStudiesError(f"grid file {path} defines no cells: give grid:, grids: or cells:")
    return raw, axes


def axis_option_keys(raw: list[dict], presets: dict, where: str) -> dict:
    """axis -> the option names its values set (a preset's bundle may set several)."""
    axis_keys: dict = {}
    for values in raw:
        for axis, value in values.items():
            bundle = _expand(axis, value, presets, where)[1]
            axis_keys.setdefault(axis, set()).update(k.rpartition(".")[2] for k in bundle)
    return axis_keys


@dataclass
class _Bases:
    """What every cell starts from: the base configs' options and the grid's `base:` overrides."""
    train_config: Path | None
    config_train: dict  # the train_config file's options
    config_eval: dict  # the eval_config file's options
    base_train: dict
    base_eval: dict
    base_finetune: bool | None


def make_cell(values: dict, axes: list[str], presets: dict, bases: _Bases, keys: tuple[set, set],
              where: str) -> Cell:
    """One cell from its axis values: overrides routed to fine-tune / eval, options resolved, id hashed."""
    overrides, labels = {}, {}
    for axis, value in values.items():
        label, bundle = _expand(axis, value, presets, where)
        labels[axis] = label
        overrides.update(bundle)
    t, e, ft = route(overrides, f"{where} cell {labels}", *keys)
    finetune = ft if ft is not None else (bases.base_finetune if bases.base_finetune is not None else True)
    if finetune and bases.train_config is None:
        raise VLMStudiesError(f"cell {labels} of {where} fine-tunes but the grid has no train_config")
    train_options = {**bases.config_train, **bases.base_train, **t} if finetune else {}
    eval_options = {**bases.config_eval, **bases.base_eval, **e}
    if finetune:  # an eval of a fine-tune sees what it was trained with
        for k in SHARED_KEYS:
            if k in train_options and k not in {**bases.base_eval, **e} and k != "seed":
                eval_options[k] = train_options[k]
    eval_options.pop("adapter", None)
    eval_options["require_adapter"] = False
    digest = hashlib.sha256(json.dumps([finetune, train_options, eval_options], sort_keys=True,
                                       default=str).encode()).hexdigest()[:6]
    ordered = {a: labels[a] for a in axes if a in labels}
    slug = ".".join(f"{_slug(a)}-{_slug(v)}" for a, v in ordered.items())[:80] or "base"
    return Cell(ordered, finetune, t, e, cell_id=f"{slug}.{digest}", train_options=train_options,
                eval_options=eval_options)


def load_grid(path: str | os.PathLike) -> Grid:
    """Parse and check a grid file; every cell's options are resolved (bad keys fail before anything runs)."""
    from training.options import OPTION_TYPES  # imports TRL: kept out of --help

    path = Path(path)
    spec = read_spec(path)
    name = _slug(str(spec.get("name") or path.stem))
    keys = _option_keys()
    train_cfg, eval_cfg = base_config(spec, "train_config", path), base_config(spec, "eval_config", path)
    presets = spec.get("presets") or {}
    base_t, base_e, base_ft = route(spec.get("base") or {}, f"{path} base", *keys)
    bases = _Bases(train_cfg, load_yaml(train_cfg, keep=dict_fields(OPTION_TYPES)) if train_cfg else {},
                   load_yaml(eval_cfg), base_t, base_e, base_ft)
    raw, axes = axis_values(spec, path)
    axis_keys = axis_option_keys(raw, presets, str(path))  # checks every preset value, excluded cells' too
    exclude = spec.get("exclude") or []
    cells, seen = [], set()
    for values in raw:
        if any(_matches(values, rule) for rule in exclude):
            continue
        cell = make_cell(values, axes, presets, bases, keys, str(path))
        digest = cell.cell_id.split(".")[-1]
        if digest in seen:  # the same options reached twice (overlapping grids)
            continue
        seen.add(digest)
        cells.append(cell)
    launcher = shlex.split(spec["launcher"]) if spec.get("launcher") else [sys.executable]
    eval_launcher = shlex.split(spec["eval_launcher"]) if spec.get("eval_launcher") else [sys.executable]
    return Grid(name, path, str(spec.get("description") or ""), train_cfg, eval_cfg, cells, launcher, eval_launcher,
                axes, axis_keys)


# ----------------------------------------------------------------------------- running cells

def run_names(grid: Grid, cell: Cell) -> str:
    return f"abl-{grid.name}.{cell.cell_id}"


def _write_yaml(path: Path, options: dict, header: str) -> None:
    save_resolved(options, path, header=header)


def _pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the ablation dies, so a killed ablation leaves no orphan writing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _run_child(cmd: list, log: Path, env: dict) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n".encode())
        fh.flush()
        kwargs = {"preexec_fn": _pdeathsig} if sys.platform.startswith("linux") else {}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, **kwargs)
        try:
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def cell_job(kind: str, config: str, run_name: str, root: str, log: str, resume: bool = False,
             adapter: str | None = None) -> int:
    """One cell's training (`kind` "train") or eval ("eval") through the library, in the process it runs in: what
    `scripts/train.py --config CONFIG --run_name NAME --root ROOT [--resume]` and `scripts/evaluate.py --config
    CONFIG --run_name NAME --root ROOT --progress false [--adapter DIR]` call. Output (stdout and stderr) is
    appended to `log`; returns the exit status those scripts would have (0, 2 for a one-line error)."""
    from utils.cli import main_guard, no_bars_unless_tty

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
    os.environ["VLM_STUDIES_ROOT"] = root
    os.environ["TOKENIZERS_PARALLELISM"] = os.environ.get("TOKENIZERS_PARALLELISM", "false")
    no_bars_unless_tty()

    def body(_argv):
        if kind == "train":
            from training.options import train_options
            from training.trainer import train

            train(train_options(config=config, overrides={"run_name": run_name}, root=root, resume=resume))
            return
        from evals.runner import run_eval
        from utils.config import parse_config

        overrides = {"run_name": run_name, "progress": False, **({"adapter": adapter} if adapter else {})}
        (args,), resolved, extra = parse_config((EvalArgs,), [], config=config, overrides=overrides)
        run_eval(args, resolved, root=root, config_path=extra.config, typed=frozenset(overrides))

    try:
        return main_guard(body, [])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _cell_process(job: tuple) -> None:  # pragma: no cover - the body of a spawned cell process
    if sys.platform.startswith("linux"):
        _pdeathsig()  # the ablation killed: this cell dies with it, nothing half-written keeps going
    sys.exit(cell_job(*job))


def _run_cell_job(launcher: list, cmd: list, job: tuple, log: Path) -> int:
    """Run one cell's job in its own process: through the library (`cell_job` in a spawned process) with the
    default launcher, or `cmd` (a script under the grid's launcher, e.g. accelerate launch / torchrun, which
    start programs) when the grid names one. A process per job returns its memory (GPU included) when it
    ends, and a killed ablation leaves no job running (Linux: the child's death signal)."""
    if launcher != [sys.executable]:
        return _run_child(cmd, log, dict(os.environ, VLM_STUDIES_ROOT=job[3], PYTHONIOENCODING="utf-8"))
    import multiprocessing

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}   (run as studies.ablation.cell_job in a spawned process)\n".encode())
    proc = multiprocessing.get_context("spawn").Process(target=_cell_process, args=(job,), daemon=False)
    proc.start()
    try:
        proc.join()
    except BaseException:
        proc.kill()
        proc.join()
        raise
    return proc.exitcode if proc.exitcode is not None else 1


def _tail(log: Path, n: int = 12) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return "\n".join((errors[-1:] if errors else []) + lines[-n:])


def _state(cell_dir: Path) -> dict:
    path = cell_dir / CELL_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _save_state(cell_dir: Path, state: dict) -> None:
    atomic_write_json(cell_dir / CELL_FILE, state)


def run_cell(grid: Grid, cell: Cell, root: Path, log=print) -> dict:
    """Train (or resume) and evaluate one cell; returns its state (status done or failed)."""
    import shutil

    cell_dir = root / "ablations" / grid.name / "cells" / cell.cell_id
    cell_dir.mkdir(parents=True, exist_ok=True)
    name = run_names(grid, cell)
    train_dir, eval_dir = root / "checkpoints" / name, root / "evals" / name
    state = _state(cell_dir)
    if state.get("status") == "done" and (eval_dir / "metrics.json").is_file():
        log(f"[ablate] {cell.cell_id}: done already, skipped")
        return state
    state.update(cell_id=cell.cell_id, label=cell.label, axes=cell.axes, finetune=cell.finetune, run_name=name,
                 train_run_dir=str(train_dir) if cell.finetune else None, eval_run_dir=str(eval_dir),
                 train_options=cell.train_options, eval_options=cell.eval_options, status="running")
    header = f"options of ablation cell {cell.label} (grid {grid.path.name}); run by scripts/ablate.py"
    commands = []
    if cell.finetune:
        _write_yaml(cell_dir / "train.yaml", cell.train_options, header)
        cmd = [*grid.launcher, "scripts/train.py", "--config", str(cell_dir / "train.yaml"), "--run_name", name,
               "--root", str(root)]
        if (train_dir / "adapter" / "adapter_config.json").is_file():
            log(f"[ablate] {cell.cell_id}: training finished already")
        else:
            if train_dir.is_dir() and not (train_dir / "config.yaml").is_file():

                if not files_match(train_dir, ("*.tmp",)):  # files, but not a run this grid started: not ours
                    state.update(status="failed", error=f"{train_dir} holds files but no config.yaml, so it is not a "
                                                        f"training run of this grid; nothing was deleted: move it "
                                                        f"away and run the grid again")
                    _save_state(cell_dir, state)
                    log(f"[ablate] {cell.cell_id}: FAILED: {state['error']}")
                    return state
                shutil.rmtree(train_dir)  # killed before its config was written: nothing in it to continue
            resume = train_dir.is_dir()
            log(f"[ablate] {cell.cell_id}: {'resuming' if resume else 'training'} ({cell.label})")
            state["status"] = "training"
            _save_state(cell_dir, state)
            t0 = time.time()
            rc = _run_cell_job(grid.launcher, cmd + (["--resume"] if resume else []),
                               ("train", str(cell_dir / "train.yaml"), name, str(root), str(cell_dir / "train.log"),
                                resume), cell_dir / "train.log")
            state["train_wall_seconds_ablate"] = round(time.time() - t0, 1)
            if rc != 0:
                state.update(status="failed", error=f"training exited with {rc}: {_tail(cell_dir / 'train.log')}")
                _save_state(cell_dir, state)
                log(f"[ablate] {cell.cell_id}: training FAILED (exit {rc}); log {cell_dir / 'train.log'}")
                return state
        commands.append(shlex.join(cmd))
    _write_yaml(cell_dir / "eval.yaml", cell.eval_options, header)
    cmd = [*grid.eval_launcher, "scripts/evaluate.py", "--config", str(cell_dir / "eval.yaml"), "--run_name", name,
           "--root", str(root), "--progress", "false"]
    if cell.finetune:
        cmd += ["--adapter", str(train_dir)]
    commands.append(shlex.join(cmd))
    state.update(status="evaluating", commands=commands)
    _save_state(cell_dir, state)
    log(f"[ablate] {cell.cell_id}: evaluating")
    rc = _run_cell_job(grid.eval_launcher, cmd, ("eval", str(cell_dir / "eval.yaml"), name, str(root),
                                                 str(cell_dir / "eval.log"), False,
                                                 str(train_dir) if cell.finetune else None), cell_dir / "eval.log")
    if rc != 0 or not (eval_dir / "metrics.json").is_file():
        state.update(status="failed", error=f"eval exited with {rc}: {_tail(cell_dir / 'eval.log')}")
        _save_state(cell_dir, state)
        log(f"[ablate] {cell.cell_id}: eval FAILED (exit {rc}); log {cell_dir / 'eval.log'}")
        return state
    state.update(status="done", error=None, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _save_state(cell_dir, state)
    m = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    log(f"[ablate] {cell.cell_id}: accuracy {m['accuracy']:.3f} on {m['n']} examples")
    return state


# ----------------------------------------------------------------------------- results

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def collect_row(grid: Grid, cell: Cell, root: Path) -> dict:
    """One results row: axis values, effective options, eval metrics, training time and memory, run dirs."""
    cell_dir = root / "ablations" / grid.name / "cells" / cell.cell_id
    state = _state(cell_dir)
    name = run_names(grid, cell)
    train_dir, eval_dir = root / "checkpoints" / name, root / "evals" / name
    m = _read_json(eval_dir / "metrics.json") if state.get("status") == "done" else {}
    tmeta = _read_json(train_dir / "run_meta.json") if cell.finetune else {}
    tres = tmeta.get("results") or {}
    emeta = _read_json(eval_dir / "run_meta.json")
    eres = ((emeta.get("sessions") or [{}])[-1].get("results") or {})
    opts = {**cell.train_options, **cell.eval_options} if cell.finetune else dict(cell.eval_options)
    ci = m.get("accuracy_ci95") or [None, None]
    axes = {}
    for a in grid.axes:  # an axis a cell does not set shows the value it ran with, when that is one option
        if a in cell.axes:
            axes[f"axis:{a}"] = cell.axes[a]
        elif a == "finetune":
            axes[f"axis:{a}"] = cell.finetune
        else:
            keys = grid.axis_keys.get(a) or set()
            axes[f"axis:{a}"] = opts.get(next(iter(keys))) if len(keys) == 1 and a in keys else None
    row = {"cell": cell.cell_id, **axes,
           "status": state.get("status", "pending"), "finetune": cell.finetune,
           "task": cell.eval_options.get("task"), "template": opts.get("template"),
           "lora_r": cell.train_options.get("lora_r") if cell.finetune else None,
           "lora_alpha": cell.train_options.get("lora_alpha") if cell.finetune else None,
           # the budget the eval ran with (the lab default where the cell sets none), else the cell's own
           "max_pixels": (m.get("pixel_budget") or {}).get("max_pixels") or opts.get("max_pixels"),
           "min_pixels": (m.get("pixel_budget") or {}).get("min_pixels") or opts.get("min_pixels"),
           "learning_rate": cell.train_options.get("learning_rate") if cell.finetune else None,
           "train_limit": cell.train_options.get("train_limit") if cell.finetune else None,
           "load_in_4bit": opts.get("load_in_4bit"), "seed": cell.train_options.get("seed") if cell.finetune else None,
           "n": m.get("n"), "accuracy": m.get("accuracy"), "ci_low": ci[0], "ci_high": ci[1],
           "consistency": (m.get("consistency") or {}).get("consistency"),
           "consistency_groups": (m.get("consistency") or {}).get("groups"),  # NLVR2's: sentences with all pairs
           "share_pred_true": m.get("share_pred_true"),
           "visual_tokens_per_example": m.get("visual_tokens_per_example") if m else None,
           "train_seconds": tres.get("train_wall_seconds"), "global_step": tres.get("global_step"),
           "train_peak_rss_mib": tres.get("peak_rss_mib"), "train_peak_gpu_mib": tres.get("peak_gpu_allocated_mib"),
           "eval_seconds": eres.get("eval_seconds"), "eval_peak_rss_mib": eres.get("peak_rss_mib"),
           "eval_peak_gpu_mib": eres.get("peak_gpu_allocated_mib"), "adapter_sha256": tres.get("adapter_sha256"),
           "git_sha": tmeta.get("git_sha") or emeta.get("git_sha"),
           "git_dirty": tmeta.get("git_dirty") if cell.finetune else emeta.get("git_dirty"),
           "train_run_dir": str(train_dir) if cell.finetune else None, "eval_run_dir": str(eval_dir),
           "error": (state.get("error") or "").splitlines()[0][:200] if state.get("error") else None}
    return row


def _fmt_pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


def _consistency_cell(r: dict) -> str:
    """NLVR2 consistency with its group count (sentences with all their image pairs), e.g. `62.3 (114)`."""
    if r.get("consistency") is None:
        return "–"
    groups = r.get("consistency_groups")
    return _fmt_pct(r["consistency"]) + (f" ({groups})" if groups is not None else "")


def _fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def write_results(grid: Grid, rows: list[dict], root: Path, command: str) -> dict:
    """results.csv, results.md and the plots under `<root>/ablations/<name>/`; returns their paths."""
    out = root / "ablations" / grid.name
    out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    atomic_write_text(out / "results.csv", buf.getvalue())
    plots = write_plots(grid, rows, out)

    git = git_info()
    shas = sorted({(r["git_sha"] or "?")[:10] + ("+dirty" if r["git_dirty"] else "") for r in rows
                   if r["status"] == "done"})
    dev = device_info()
    hw = dev.get("gpu") or f"CPU only ({dev.get('cpu_count')} cores, {dev.get('processor') or dev.get('machine')})"
    axis_cols = [c for c in fields if c.startswith("axis:")]
    lines = [f"# Ablation `{grid.name}`", ""]
    if grid.description:
        lines += [grid.description.strip(), ""]
    lines += [f"- grid: `{_rel(grid.path)}`", f"- command: `{command}`",
              f"- commit of the runs: {', '.join(shas) or '–'} (table written at {(git['git_sha'] or '?')[:10]}"
              f"{'+dirty' if git['git_dirty'] else ''}, {time.strftime('%Y-%m-%d %H:%M')})",
              f"- hardware: {hw}; times are wall-clock on this machine (noisy when it is shared)",
              f"- cells: {sum(r['status'] == 'done' for r in rows)} done of {len(rows)}", ""]
    head = ["cell", *[c.split(":", 1)[1] for c in axis_cols], "eval task", "n", "accuracy % (95% CI)", "consistency % (groups)",
            "% pred. True", "visual tok./ex.", "train s", "steps", "peak MiB train / eval", "runs"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        acc = (f"{_fmt_pct(r['accuracy'])} ({_fmt_pct(r['ci_low'])}–{_fmt_pct(r['ci_high'])})"
               if r["accuracy"] is not None else r["status"])
        peak_t = r["train_peak_gpu_mib"] or r["train_peak_rss_mib"]
        peak_e = r["eval_peak_gpu_mib"] or r["eval_peak_rss_mib"]
        unit = " (GPU)" if r["train_peak_gpu_mib"] or r["eval_peak_gpu_mib"] else ""
        links = []
        if r["train_run_dir"]:
            links.append(f"[train](../../checkpoints/{Path(r['train_run_dir']).name})")
        links.append(f"[eval](../../evals/{Path(r['eval_run_dir']).name})")
        cells = [f"`{r['cell'].split('.')[-1]}`", *[_fmt(r.get(c)) for c in axis_cols], str(r["task"]),
                 _fmt(r["n"]), acc, _consistency_cell(r), _fmt_pct(r["share_pred_true"]),
                 _fmt(r["visual_tokens_per_example"]), _fmt(r["train_seconds"]) if r["finetune"] else "zero-shot",
                 _fmt(r["global_step"]), f"{_fmt(peak_t, 0)} / {_fmt(peak_e, 0)}{unit}", " · ".join(links)]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed cells:", *[f"- `{r['cell']}`: {r['error']}" for r in failed]]
    if plots:
        lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    lines += ["", "Regenerate: the command above (finished cells are skipped); one cell: `python scripts/reproduce.py "
                  "<run dir>`."]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return {"csv": out / "results.csv", "md": out / "results.md", "plots": plots}


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def write_plots(grid: Grid, rows: list[dict], out: Path) -> list[Path]:
    """Accuracy (95% CI bars) against visual tokens per example, LoRA rank and any other numeric axis."""
    done = [r for r in rows if r["status"] == "done" and r["accuracy"] is not None]
    plots = []
    specs = [("visual_tokens_per_example", "visual tokens per example", False, "accuracy_vs_visual_tokens"),
             ("lora_r", "LoRA rank", True, "accuracy_vs_lora_rank")]
    for key in ("learning_rate", "train_limit", "lora_alpha"):
        if any(a == key for a in grid.axes):
            specs.append((key, key.replace("_", " "), key in ("learning_rate", "train_limit"), f"accuracy_vs_{key}"))
    for key, xlabel, logx, stem in specs:
        pts = [r for r in done if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if len({r[key] for r in pts}) < 2:
            continue
        path = out / f"{stem}.png"
        baselines = {r["task"]: r for r in done if not r["finetune"]} if key == "lora_r" else {}
        _plot(pts, key, xlabel, logx, path, grid, baselines)
        plots.append(path)
    return plots


# The option names behind each plot's x value: an axis that sets them is the x axis under another name.
X_OPTIONS = {"visual_tokens_per_example": {"min_pixels", "max_pixels"}, "lora_r": {"lora_r", "lora_alpha"},
             "learning_rate": {"learning_rate"}, "train_limit": {"train_limit"}, "lora_alpha": {"lora_alpha"}}


def _series_key(r: dict, grid: Grid, x_key: str) -> str:
    """What distinguishes a row's line: the task, zero-shot or not, and every axis that does not set x."""
    parts = [str(r["task"])]
    explained = X_OPTIONS.get(x_key, {x_key})
    for a in grid.axes:
        keys = grid.axis_keys.get(a) or {a}
        if a in ("task", "finetune") or keys <= explained:
            continue
        v = r.get(f"axis:{a}")
        if v is not None:
            parts.append(f"{a}={v}")
    if not r["finetune"]:
        parts.append("zero-shot")
    return ", ".join(parts)


def _plot(rows: list[dict], x_key: str, xlabel: str, logx: bool, path: Path, grid: Grid,
          baselines: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(_series_key(r, grid, x_key), []).append(r)
    fig, ax = plt.subplots(figsize=(9.0, 4.4), dpi=110)
    colors = plt.get_cmap("tab20").colors
    for i, (label, pts) in enumerate(sorted(series.items())):
        pts = sorted(pts, key=lambda r: r[x_key])
        xs = [r[x_key] for r in pts]
        ys = [100 * r["accuracy"] for r in pts]
        err = [[100 * (r["accuracy"] - r["ci_low"]) for r in pts], [100 * (r["ci_high"] - r["accuracy"]) for r in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, linestyle="-" if len(xs) > 1 else "none",
                    color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20])
    for task, r in sorted((baselines or {}).items()):  # zero-shot accuracy of each task, where x does not apply
        ax.axhline(100 * r["accuracy"], linestyle="--", linewidth=1, color="black", alpha=0.5)
        ax.annotate(f"{task} zero-shot", (0.01, 100 * r["accuracy"]), xycoords=("axes fraction", "data"), fontsize=7,
                    va="bottom")
    if logx:
        from matplotlib.ticker import ScalarFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xticks(sorted({r[x_key] for r in rows}))
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy % (95% Wilson CI)")
    ax.set_title(f"{grid.name}: accuracy vs {xlabel}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the whole grid

def run_grid(grid: Grid, root: Path, only: str | None = None, dry_run: bool = False, report_only: bool = False,
             command: str | None = None, log=print) -> dict:
    """Run every cell not finished yet (those matching `only`, a regex on cell ids), then write the results."""
    cells = [c for c in grid.cells if not only or re.search(only, c.cell_id)]
    if only and not cells:
        raise VLMStudiesError(f"--only {only!r} matches none of the {len(grid.cells)} cells of {grid.name}: "
                              f"{', '.join(c.cell_id for c in grid.cells[:5])} ...")
    command = command or shlex.join(["python", "scripts/ablate.py", "--grid", _rel(grid.path)])
    if dry_run:
        for c in cells:
            log(f"{c.cell_id}: {'fine-tune + eval' if c.finetune else 'eval only'}; train {c.train}; eval {c.eval}")
        return {"cells": len(cells)}
    t0 = time.time()
    states = []
    if not report_only:
        for i, cell in enumerate(cells, 1):
            log(f"[ablate] cell {i}/{len(cells)} {cell.cell_id}")
            states.append(run_cell(grid, cell, root, log=log))
    rows = [collect_row(grid, c, root) for c in grid.cells]
    paths = write_results(grid, rows, root, command)
    failed = [r["cell"] for r in rows if r["status"] == "failed"]
    log(f"[ablate] {grid.name}: {sum(r['status'] == 'done' for r in rows)} of {len(rows)} cells done in "
        f"{time.time() - t0:.0f}s; table {paths['md']}; csv {paths['csv']}"
        + (f"; plots {', '.join(p.name for p in paths['plots'])}" if paths["plots"] else ""))
    return {"rows": rows, "failed": failed, **paths}
