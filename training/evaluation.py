"""Accuracy for training runs: score mode (`evals.scoring`) on validation, per statement family.

Score mode compares the probabilities of the True and False answer tokens at the answer position:
exact, no parsing, no invalid answers. Used before and after training (all of `eval_split`, or its
first `eval_limit` rows) and during it (a fixed subset every `accuracy_eval_steps` steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from evals.scoring import accuracy_by, score_examples


@dataclass
class _Seen:
    """What accuracy_by needs of an example, kept instead of the example (its images are dropped)."""
    uid: str
    label: bool
    meta: dict = field(default_factory=dict)


def accuracy(model, processor, examples: Iterable, template: str, batch_size: int = 16) -> dict:
    """`{family: {n, accuracy, share_pred_true}}` plus `all`; examples are read lazily, images not kept."""
    import torch

    seen: list[_Seen] = []

    def remember(items):
        for ex in items:
            seen.append(_Seen(ex.uid, ex.label, {"family": ex.meta.get("family") or "all"}))
            yield ex

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            records = score_examples(model, processor, remember(examples), template, batch_size)
    finally:
        model.train(was_training)
    return accuracy_by(records, seen)


def eval_examples(data_opts, root=None, limit: int | None = None):
    """The loader's examples of `eval_split` (lazily read); None when evaluation is off."""
    from training.data import ensure_cached
    from vlm_datasets.nlvr2 import load_nlvr2

    if not data_opts.eval_split or str(data_opts.eval_split).lower() == "none":
        return None
    if data_opts.mode == "cached":
        ensure_cached(data_opts.source, data_opts.eval_split, root)
    return load_nlvr2(data_opts.source, data_opts.eval_split, data_opts.mode, root=root, limit=limit)


def fixed_subset(split, n: int) -> list:
    """`n` examples taken from each family in turn (round robin), so every family is watched.

    Reads at most max(10n, 200) rows, and keeps at most `n` per family, so a large split is not held
    decoded in memory.
    """
    by_family: dict[str, list] = {}
    for i, ex in enumerate(split):
        fam = by_family.setdefault(ex.meta.get("family") or "all", [])
        if len(fam) < n:
            fam.append(ex)
        if i + 1 >= max(10 * n, 200) or (len(by_family) == 1 and len(fam) >= n and "family" not in ex.meta):
            break
    out, i = [], 0
    families = sorted(by_family)
    while len(out) < n and any(i < len(v) for v in by_family.values()):
        for f in families:
            if i < len(by_family[f]) and len(out) < n:
                out.append(by_family[f][i])
        i += 1
    return out


def format_table(before: dict | None, after: dict | None) -> str:
    """Accuracy before/after per family, with the share predicted True beside each."""
    groups = sorted(set(before or {}) | set(after or {}), key=lambda g: (g == "all", g))
    lines = [f"{'family':<18}{'n':>5}   {'before acc':>10} {'(%True)':>8}   {'after acc':>10} {'(%True)':>8}"]
    for g in groups:
        b, a = (before or {}).get(g), (after or {}).get(g)
        n = (a or b)["n"]

        def cell(x):
            return f"{x['accuracy'] * 100:>9.1f}% {x['share_pred_true'] * 100:>7.1f}%" if x else f"{'-':>10} {'':>8}"

        lines.append(f"{g:<18}{n:>5}   {cell(b)}   {cell(a)}")
    return "\n".join(lines)
