"""Accuracy for training runs: score mode (`scoring.modes`) on validation, per statement family.

Score mode compares the probabilities of the True and False answer tokens at the answer position:
exact, no parsing, no invalid answers. Used before and after training (all of `eval_split`, or its
first `eval_limit` rows) and during it (a fixed subset every `accuracy_eval_steps` steps).

Before and after training each family also gets NLVR2's consistency (`scoring.metrics.consistency`:
share of sentences right on every image pair they were shown with) and its group count. A sentence
group never spans two families, so per-family consistency is well defined. The during-training
subset takes a few rows per family, cutting groups apart, so it reports accuracy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from scoring.metrics import consistency
from scoring.modes import accuracy_by, score_examples
from scoring.occlusion import fixed_subset_summary


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
            seen.append(_Seen(ex.uid, ex.label, {"family": ex.meta.get("family") or "all",
                                                 "consistency_group": ex.meta.get("consistency_group")}))
            yield ex

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            records = score_examples(model, processor, remember(examples), template, batch_size)
    finally:
        model.train(was_training)
    return with_consistency(accuracy_by(records, seen), records, seen)


def with_consistency(table: dict, records: list[dict], seen: list) -> dict:
    """Add NLVR2 consistency and its group count to each family's row (and `all`) of `accuracy_by`'s table."""
    rows: dict[str, list[dict]] = {}
    for r, ex in zip(records, seen):
        rec = {"uid": ex.uid, "label": ex.label, "correct": r["prediction"] == ex.label,
               "consistency_group": ex.meta.get("consistency_group")}
        for g in dict.fromkeys((ex.meta.get("family", "all"), "all")):
            rows.setdefault(g, []).append(rec)
    for g, recs in rows.items():
        c = consistency(recs)
        table[g].update(consistency=c["consistency"], consistency_groups=c["groups"])
    return table


def occlusion_summary(model, processor, examples: list, template: str, batch_size: int = 16) -> dict:
    """`scoring.occlusion.summarise` of `examples` under the model as it is now (eval mode, no grad):
    per family, how P(True) moves when the left / right / both images are replaced or swapped."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # x5 inputs per example: a fifth of the batch keeps the forward pass the size of an accuracy one
            return fixed_subset_summary(model, processor, examples, template, max(1, batch_size // 5))
    finally:
        model.train(was_training)


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
    """Accuracy before/after per family, with the share predicted True and NLVR2 consistency beside each."""
    groups = sorted(set(before or {}) | set(after or {}), key=lambda g: (g == "all", g))
    lines = [f"{'family':<18}{'n':>5}{'groups':>7}   {'before acc':>10} {'(%True)':>8} {'consist.':>8}   "
             f"{'after acc':>10} {'(%True)':>8} {'consist.':>8}"]
    for g in groups:
        b, a = (before or {}).get(g), (after or {}).get(g)
        n = (a or b)["n"]
        n_groups = (a or b).get("consistency_groups")

        def cell(x):
            if not x:
                return f"{'-':>10} {'':>8} {'':>8}"
            cons = x.get("consistency")
            return (f"{x['accuracy'] * 100:>9.1f}% {x['share_pred_true'] * 100:>7.1f}% "
                    + (f"{cons * 100:>7.1f}%" if cons is not None else f"{'-':>8}"))

        lines.append(f"{g:<18}{n:>5}{'-' if n_groups is None else n_groups:>7}   {cell(b)}   {cell(a)}")
    return "\n".join(lines)
