"""Look inside: one example as an offline page, or a whole split as occlusion.jsonl + a summary.

    look_at_uids(opts)   -> <root>/analysis/inside/<name>/uid/<uid>/index.html (+ inside.json, PNGs)
    run_split(opts)      -> <root>/analysis/inside/<name>/occlusion.jsonl, summary.json, index.html

`<name>` is `<model>-<adapter or zeroshot>-<source>-<split>` (or `run_name`). With an adapter, every
view is computed twice from the one loaded model, with the adapter on and off (PEFT's
`disable_adapter`), so "before" (the base) and "after" fine-tuning sit on the same axes.

The split run is resumable like an eval run (`evals.runner`): batches are fixed slices of the split,
records are appended per batch with fsync (`scoring.predictions`), a re-run computes only the missing
uids, and a folder holding results of a different look (other model, adapter weights, template,
occluder, data...) is refused unless `overwrite`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scoring.capture import adapter_state
from scoring.look import look_batch, prepare
from scoring.modes import batched
from scoring.occlusion import effects, format_summary, summarise, LABELS, OCCLUDERS, VARIANTS
from scoring.predictions import read_predictions, PredictionWriter
from scoring.slices import default_slices
from utils.errors import VLMStudiesError
from utils.io import atomic_write_json
from utils.models import load_model_and_processor
from utils.paths import get_root
from utils.run_meta import run_metadata
from vlm_datasets import load_nlvr2
from vlm_datasets.inspect import find_samples
from vlm_datasets.prompts import (get_template, pixel_budget, set_pixel_limits, DEFAULT_TEMPLATE, LAB_MAX_PIXELS,
                                  LAB_MIN_PIXELS)
from evals.inside.page import write_split_page, write_uid_page
from evals.report import _safe
from evals.runner import _slug, adapter_info, adapter_label, check_identity, resolve_adapter

INSIDE_VERSION = 1  # bump when what a record holds or how it is computed changes
RESULTS = "occlusion.jsonl"
IDENTITY = "inside_identity.json"
SUMMARY = "summary.json"
UID_DIR = "uid"


@dataclass
class InsideOptions:
    """What to look at and with which model (the flags of scripts/look_inside.py)."""

    model: str = "local:small"
    adapter: str | None = None
    source: str | None = "synthetic"
    split: str = "validation"
    mode: str = "streaming"
    template: str = "tf"
    uids: list = field(default_factory=list)
    limit: int | None = None
    occluder: str = "mean"
    per_head: bool = False
    with_base: bool = True
    batch_size: int = 4
    dtype: str = "auto"
    load_in_4bit: bool = False
    min_pixels: int | None = None
    max_pixels: int | None = None
    run_name: str | None = None
    overwrite: bool = False
    inline: bool = False
    on_error: str = "skip"

    def __post_init__(self):
        if self.occluder not in OCCLUDERS:
            raise VLMStudiesError(f"unknown occluder '{self.occluder}'; choose {' or '.join(OCCLUDERS)}")
        if self.mode not in ("streaming", "cached"):
            raise VLMStudiesError(f"unknown mode '{self.mode}'; choose streaming or cached")
        if self.batch_size < 1:
            raise VLMStudiesError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise VLMStudiesError(f"limit must be a positive number of examples, not {self.limit}")


# ----------------------------------------------------------------------------- where things go

def source_label(source: str | None) -> str:

    source = source or "synthetic"
    path = Path(str(source).rstrip("/\\"))
    return _slug(path.name if path.exists() else source)


def folder_name(model: str, adapter_dir: Path | None, source: str | None, split: str, template: str = "tf") -> str:
    """`<model>-<adapter or zeroshot>-<source>-<split>`, plus the template when it is not the default."""

    parts = [model.rstrip("/").split("/")[-1], adapter_label(adapter_dir), source_label(source), split]
    name = get_template(template).name
    return "-".join(_slug(x) for x in parts + ([name] if name != DEFAULT_TEMPLATE else []))


def inside_dir(opts: InsideOptions, adapter_dir: Path | None, root) -> Path:
    name = opts.run_name or folder_name(opts.model, adapter_dir, opts.source, opts.split, opts.template)
    return get_root(root, create=False) / "analysis" / "inside" / name


def uid_page(folder: Path, uid: str) -> Path:

    return folder / UID_DIR / _safe(uid) / "index.html"


def page_for(opts: InsideOptions, uid: str, root=None) -> Path:
    """Where `look_at_uids(opts)` puts the page of `uid` (it may not exist yet)."""

    r = get_root(root, create=False)
    try:
        adapter_dir = resolve_adapter(opts.adapter, r)
    except VLMStudiesError:
        adapter_dir = Path(opts.adapter) if opts.adapter else None
    return uid_page(inside_dir(opts, adapter_dir, r), uid)


def options_for_eval_run(run: dict) -> InsideOptions | None:
    """The look-inside options matching an eval run (`evals.report.load_run`), None for a task that is not
    NLVR2's (two images and a statement)."""
    cfg, m = run["config"], run["metrics"]
    if not str(m.get("task") or cfg.get("task") or "nlvr2").startswith("nlvr2"):
        return None
    return InsideOptions(model=cfg.get("model") or m.get("model") or "local:small", adapter=cfg.get("adapter"),
                         source=cfg.get("source") or (m.get("dataset") or {}).get("source"),
                         split=m.get("split") or cfg.get("split") or "validation", mode=cfg.get("mode") or "streaming",
                         template=cfg.get("template") or "tf", dtype=cfg.get("dtype") or "auto",
                         load_in_4bit=bool(cfg.get("load_in_4bit")), min_pixels=cfg.get("min_pixels"),
                         max_pixels=cfg.get("max_pixels"))


def command_for(opts: InsideOptions, uids: list[str] | None = None) -> str:
    """The scripts/look_inside.py command that reproduces these options."""
    parts = ["python scripts/look_inside.py"]
    if uids:
        parts.append("--uid " + " ".join(uids))

    lab = {"min_pixels": LAB_MIN_PIXELS, "max_pixels": LAB_MAX_PIXELS}  # the budget a look gets without the flag
    for key in ("model", "adapter", "source", "split", "mode", "template", "limit", "occluder", "run_name",
                "min_pixels", "max_pixels"):
        v = getattr(opts, key)
        if v not in (None, "") and v != getattr(InsideOptions, key, None) and v != lab.get(key):
            parts.append(f"--{key} {v}")
    for flag in ("per_head", "load_in_4bit"):
        if getattr(opts, flag):
            parts.append(f"--{flag}")
    if not opts.with_base and opts.adapter:
        parts.append("--with_base false")
    return " ".join(parts)


# ----------------------------------------------------------------------------- model and states

def load(opts: InsideOptions, adapter_dir: Path | None, root=None, model_and_processor=None):
    """The model and processor to look with: `model_and_processor` when given (the playground's, the
    notebook's), its processor set to this look's pixel budget, else loaded as evaluation loads them."""
    if model_and_processor is not None:
        model, processor = model_and_processor
        set_pixel_limits(processor, *pixel_budget(opts.min_pixels, opts.max_pixels))
        return model, processor
    return load_model_and_processor(opts.model, adapter=str(adapter_dir) if adapter_dir else None, dtype=opts.dtype,
                                    load_in_4bit=opts.load_in_4bit, min_pixels=opts.min_pixels,
                                    max_pixels=opts.max_pixels, root=root)


def model_states(opts: InsideOptions, adapter_dir: Path | None, model) -> list[tuple[str, str, bool]]:
    """`(key, label, adapter on?)` for each state the views are computed in (the adapter's first)."""

    if adapter_dir is None or not hasattr(model, "disable_adapter"):
        return [("base", opts.model.rstrip("/").split("/")[-1], True)]
    states = [("adapter", f"with {adapter_label(adapter_dir)}", True)]
    if opts.with_base:
        states.append(("base", "base (adapter off)", False))
    return states


def look_states(model, processor, examples, opts, states, **kw) -> dict:
    """`{state key: look_batch(...) results}` for each model state."""
    prepared = prepare(processor, examples, opts.template, opts.occluder)
    out = {}
    for key, _, on in states:
        with adapter_state(model, on):
            out[key] = look_batch(model, processor, examples, opts.template, opts.occluder, prepared=prepared, **kw)
    return out


def _identity(opts: InsideOptions, data_info: dict, ad_info: dict | None) -> dict:
    lo, hi = pixel_budget(opts.min_pixels, opts.max_pixels)  # the budget the images are resized within
    return {"version": INSIDE_VERSION, "model": opts.model,
            "adapter_weights_sha256": ad_info and ad_info["weights_sha256"],
            "template": get_template(opts.template).tag, "source": data_info.get("source"), "split": opts.split,
            "data_fingerprint": data_info.get("fingerprint") or data_info.get("revision"), "occluder": opts.occluder,
            "dtype": opts.dtype, "load_in_4bit": opts.load_in_4bit, "min_pixels": lo, "max_pixels": hi,
            "with_base": bool(opts.with_base and ad_info)}


def _inputs(opts: InsideOptions, root):
    """`(root, adapter_dir, data)`, checked before anything is written or loaded (a bad option fails at once)."""

    root = get_root(root)
    get_template(opts.template)
    adapter_dir = resolve_adapter(opts.adapter, root)
    lo, hi = pixel_budget(opts.min_pixels, opts.max_pixels)  # very large images are decoded at the processor's size
    data = load_nlvr2(opts.source, opts.split, opts.mode, root=root, limit=opts.limit, on_error=opts.on_error,
                      quiet=True, min_pixels=lo, max_pixels=hi)
    return root, adapter_dir, data


def _folder(opts: InsideOptions, root, adapter_dir, data) -> Path:
    """The output folder, refusing one that holds a split run of a different look (unless `overwrite`)."""

    folder = inside_dir(opts, adapter_dir, root)
    folder.mkdir(parents=True, exist_ok=True)
    ident = _identity(opts, data.info, adapter_info(adapter_dir))
    check_identity(folder, ident, opts.overwrite, results=RESULTS, derived=(SUMMARY,), identity_file=IDENTITY,
                   what="results of a different look")
    atomic_write_json(folder / IDENTITY, ident)
    return folder


def _meta(folder: Path, opts: InsideOptions, extra: dict) -> dict:
    """The split run's run_meta.json (git, command, versions, device, options, data, timing)."""
    meta = run_metadata(None, options=asdict(opts), **extra)
    atomic_write_json(folder / "run_meta.json", meta)
    return meta


# ----------------------------------------------------------------------------- one example at a time

def look_at_uids(opts: InsideOptions, root=None, model_and_processor=None, quiet: bool = False) -> list[dict]:
    """Look at `opts.uids`: print each one's occlusion table and write its offline page.

    Returns per uid `{uid, page, folder, result}` (`result` as saved in inside.json). An unknown uid is a
    one-line error naming the closest ones, raised before the model is loaded.
    """

    if not opts.uids:
        raise VLMStudiesError("no uid to look at; pass --uid UID (or --bookmarks TAG), or leave both out for a "
                              "split run")
    root, adapter_dir, data = _inputs(opts, root)
    samples = find_samples(data, opts.uids, with_siblings=False)
    folder = _folder(opts, root, adapter_dir, data)
    model, processor = load(opts, adapter_dir, root, model_and_processor)
    states = model_states(opts, adapter_dir, model)
    meta = run_metadata(None)  # git, date and command go into each page's inside.json (run_meta.json is the split's)
    out = []
    for batch in batched([s.example for s in samples], opts.batch_size):
        looks = look_states(model, processor, batch, opts, states, detail=True, per_head=opts.per_head)
        for i, ex in enumerate(batch):
            result = _uid_result(ex, {k: v[i] for k, v in looks.items()}, states, opts, meta)
            page = write_uid_page(uid_page(folder, ex.uid), ex, result, inline=opts.inline)
            out.append({"uid": ex.uid, "page": page, "folder": folder, "result": result})
            if not quiet:
                print(format_uid(result) + f"\n  page: {page}\n", flush=True)
    return out


def _uid_result(ex, looks: dict, states, opts: InsideOptions, meta: dict) -> dict:
    models = {}
    for key, label, _ in states:
        r = looks[key]
        models[key] = {"label": label, "p_true": r["p_true"], "occlusion": effects(r["p_true"]), "lens": r["lens"],
                       "shares": r["shares"], "cells": r["cells"], "layout": r["layout"], "heads": r["heads"]}
        for extra in ("head_shares", "head_cells"):
            if extra in r:
                models[key][extra] = r[extra]
    return {"uid": ex.uid, "sentence": ex.sentence, "label": bool(ex.label), "family": ex.meta.get("family"),
            "slices": default_slices(ex), "template": get_template(opts.template).tag, "occluder": opts.occluder,
            "model": opts.model, "adapter": opts.adapter, "source": opts.source, "split": opts.split,
            "command": command_for(opts, [ex.uid]), "git_sha": meta.get("git_sha"), "git_dirty": meta.get("git_dirty"),
            "date": meta.get("date"), "versions": meta.get("versions"), "device": meta.get("device"),
            "models": models, "version": INSIDE_VERSION}


def format_uid(result: dict) -> str:
    """The occlusion table of one uid, its attention shares and logit lens, as text."""
    ms = list(result["models"].values())
    width = 28
    lines = [f"{result['uid']}  label {result['label']}" + (f"  ({result['family']})" if result.get("family") else ""),
             f"  \"{result['sentence']}\"   occluder: {result['occluder']}",
             f"  {'P(True) at the answer':<24}" + "".join(f"{'':7}{m['label'][:width - 8]:<{width - 7}}" for m in ms)]
    for v in VARIANTS:
        cells = []
        for m in ms:
            if v == "original":
                cells.append(f"{m['p_true'][v]:>{width - 15}.4f}" + " " * 15)
            else:
                e = m["occlusion"][v]
                cells.append(f"{e['p_true']:>{width - 15}.4f} ({e['delta']:+.4f}) {'flip' if e['flip'] else '    '}")
        lines.append(f"  {LABELS[v]:<24}" + "".join(cells))
    for m in ms:
        n = len(m["shares"])
        mean = {k: sum(s[k] for s in m["shares"]) / n for k in m["shares"][0]}
        lens = " ".join(f"{p:.2f}" for p in m["lens"]["p_true"])
        lines.append(f"  {m['label']}: attention at the answer, mean over {n} layers: "
                     + ", ".join(f"{k} {100 * v:.1f}%" for k, v in mean.items())
                     + f"; logit lens P(True), embeddings then layers 1-{n}: {lens}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- a whole split

def run_split(opts: InsideOptions, root=None, model_and_processor=None, progress: bool = True) -> dict:
    """Occlusion (+ logit lens and attention shares) for every example of the split (first `limit`).

    Returns `{"folder", "summary", "new", "reused", "html"}`; see the module docstring for resuming.
    """

    root, adapter_dir, data = _inputs(opts, root)
    folder = _folder(opts, root, adapter_dir, data)
    model, processor = load(opts, adapter_dir, root, model_and_processor)
    states = model_states(opts, adapter_dir, model)
    path = folder / RESULTS
    done = {r["uid"]: r for r in read_predictions(path, repair=True)}
    from tqdm.auto import tqdm

    bar = tqdm(total=data.num_rows(), unit="ex", desc="look inside", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    order, new, t0 = [], 0, time.time()
    try:
        with PredictionWriter(path) as writer:
            for batch in batched(data, opts.batch_size):
                uids = [ex.uid for ex in batch]
                if len(set(uids) | set(order)) < len(order) + len(uids):
                    raise VLMStudiesError(f"a uid occurs twice in {data.info.get('source')} [{opts.split}]; uids must "
                                          f"be unique to resume")
                order += uids
                missing = [ex for ex in batch if ex.uid not in done]
                if missing:
                    # the whole batch again (the same padding as an uninterrupted run); only the gaps are written
                    looks = look_states(model, processor, batch, opts, states)
                    fresh = []
                    for i, ex in enumerate(batch):
                        if ex.uid in done:
                            continue
                        fresh.append({"uid": ex.uid, "sentence": ex.sentence, "label": bool(ex.label),
                                      "family": ex.meta.get("family"), "slices": default_slices(ex),
                                      "models": {k: {"p_true": looks[k][i]["p_true"], "lens": looks[k][i]["lens"],
                                                     "shares": looks[k][i]["shares"]} for k, _, _ in states}})
                    writer.append(fresh)
                    done.update({r["uid"]: r for r in fresh})
                    new += len(fresh)
                bar.update(len(batch))
    finally:
        bar.close()
    if not order:
        raise VLMStudiesError(f"no examples in {data.info.get('source')} [{opts.split}]; check --source/--split")
    records = [done[u] for u in order]
    labels = {k: label for k, label, _ in states}
    summary = {"n": len(records), "template": opts.template, "occluder": opts.occluder, "states": labels,
               "occlusion": {k: summarise(records, k) for k in labels},
               "lens": {k: lens_summary(records, k) for k in labels},
               "shares": {k: shares_summary(records, k) for k in labels}}
    atomic_write_json(folder / SUMMARY, summary)
    meta = _meta(folder, opts, {"adapter_dir": str(adapter_dir) if adapter_dir else None, "data": data.info,
                                "states": states, "new": new, "reused": len(records) - new,
                                "seconds": round(time.time() - t0, 2)})
    html = write_split_page(folder, records, summary, opts, meta, command_for(opts))
    for k, label in labels.items():
        print(f"occlusion, {label} ({len(records)} examples; mean |dP(True)| / share of decisions flipped):")
        print(format_summary(summary["occlusion"][k]))
    print(f"outputs: {folder} (page: {html})")
    return {"folder": folder, "summary": summary, "new": new, "reused": len(records) - new, "html": html}


def _groups(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        for g in dict.fromkeys(["all", *r.get("slices", [])]):
            groups.setdefault(g, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])))


def _mean_lists(lists: list[list[float]]) -> list[float] | None:
    return [sum(col) / len(lists) for col in zip(*lists)] if lists else None


def lens_summary(records: list[dict], key: str) -> dict:
    """Per group: mean logit-lens P(True) per layer over the examples labelled True and those labelled False."""
    out = {}
    for g, rs in _groups(records).items():
        rs = [r for r in rs if key in r["models"]]
        out[g] = {"n": len(rs),
                  "label_true": _mean_lists([r["models"][key]["lens"]["p_true"] for r in rs if r["label"]]),
                  "label_false": _mean_lists([r["models"][key]["lens"]["p_true"] for r in rs if not r["label"]]),
                  "answer_mass": _mean_lists([r["models"][key]["lens"]["answer_mass"] for r in rs])}
    return out


def shares_summary(records: list[dict], key: str) -> dict:
    """Per group: mean attention share per layer on the left image, the right image and the text."""
    out = {}
    for g, rs in _groups(records).items():
        shares = [r["models"][key]["shares"] for r in rs if key in r["models"]]
        n_layers = len(shares[0])
        out[g] = [{k: sum(s[layer][k] for s in shares) / len(shares) for k in shares[0][layer]}
                  for layer in range(n_layers)]
    return out


__all__ = ["InsideOptions", "look_at_uids", "run_split", "page_for", "uid_page", "command_for", "format_uid",
           "options_for_eval_run"]
