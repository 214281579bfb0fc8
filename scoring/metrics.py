"""Metrics over prediction records, in plain Python (no scipy/sklearn), each small enough to check by hand.

A record is one line of predictions.jsonl: at least `uid`, `label`, `prediction` (True/False, or
None when a generated answer was invalid), `valid`, `correct`; optionally `p_true`,
`consistency_group`, `pair_key`, `slices`. Invalid answers count as wrong in accuracy and consistency (they are not dropped: a
model that refuses to answer must not look better); `accuracy_valid` is reported beside.

- accuracy with a 95% Wilson score interval;
- consistency, as NLVR2 defines it (Setup/NOTES.md §5; the official nlvr2/eval/metrics.py): a group
  is one sentence with every image pair it was shown with (the identifier with its pair field
  blanked, `dev-850-0-0` -> `dev-850--0`, parsed by `vlm_datasets.nlvr2.parse_uid` alone); the
  share of groups whose predictions are all correct. A row whose identifier is not NLVR2's is its
  own group, and `ungrouped_rows` counts them. `pair_consistency` is a different, per-image-pair
  statistic (all statements about one pair right), kept under its own name;
- majority-class baseline: accuracy of always answering the more frequent gold label here;
- calibration from `p_true`: ECE over `bins` equal-width bins of [0, 1] (left-closed, the last
  one closed) of the confidence max(p, 1-p) of the predicted class: the standard top-label ECE
  (Guo et al. 2017), so for two classes only the bins above 0.5 fill. Brier score, and AUROC of
  p_true against the label (Mann-Whitney, ties count half);
- McNemar's exact test for two runs on the same examples.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Iterable, Sequence

from vlm_datasets.nlvr2 import parse_uid

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """95% Wilson score interval for k successes in n trials (None when n == 0)."""
    if n == 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at k = 0 or k = n the bound is exactly 0 or 1; rounding would otherwise give 0.9999999999999999
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def accuracy_stats(correct: Sequence[bool]) -> dict:
    n, k = len(correct), sum(bool(c) for c in correct)
    ci = wilson_interval(k, n)
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "ci95": list(ci) if ci else None}


def _group_of(record: dict, field: str) -> str | None:
    """A record's group key: its own `field` when it has one (None = no group), else parsed from its uid."""
    if field in record:
        return record[field]
    return parse_uid(record["uid"])[field]  # predictions written before the field existed


def _all_correct(records: Iterable[dict], field: str) -> tuple[dict, int]:
    """Rows grouped by `field` (a row without a group is its own), and how many rows had no group."""
    groups: dict = defaultdict(list)
    ungrouped = 0
    for r in records:
        key = _group_of(r, field)
        if key is None:
            ungrouped += 1
            key = ("ungrouped", r["uid"])  # a tuple never equals a parsed key (always a string)
        groups[key].append(r)
    return groups, ungrouped


def _group_summary(groups: dict, ungrouped: int) -> dict:
    n = len(groups)
    k = sum(all(bool(r["correct"]) for r in v) for v in groups.values())
    sizes = Counter(len(v) for v in groups.values())
    return {"groups": n, "consistent": k, "consistency": k / n if n else None,
            "mean_group_size": sum(len(v) for v in groups.values()) / n if n else None,
            "group_sizes": {str(size): sizes[size] for size in sorted(sizes)},
            "mixed_label_groups": sum(len({bool(r["label"]) for r in v}) > 1 for v in groups.values()),
            "ungrouped_rows": ungrouped}


def consistency(records: Iterable[dict]) -> dict:
    """NLVR2's consistency: share of sentence groups (a sentence with all its image pairs) all correct.

    Also returns the group count, the group sizes, how many groups mix True and False pairs (where a
    model that ignores the images cannot be consistent), and `ungrouped_rows`: rows whose identifier
    does not follow NLVR2's format, each counted as its own group.
    """
    groups, ungrouped = _all_correct(records, "consistency_group")
    return {"definition": "NLVR2: per sentence, over all image pairs shown with it (pair field of the "
                          "identifier blanked)", **_group_summary(groups, ungrouped)}


def pair_consistency(records: Iterable[dict]) -> dict:
    """Per image pair: share of pairs whose statements are all correct. NOT NLVR2's consistency."""
    groups, ungrouped = _all_correct(records, "pair_key")
    return {"definition": "per image pair, over all statements about it (not NLVR2's metric)",
            **_group_summary(groups, ungrouped)}


def majority_baseline(labels: Sequence[bool]) -> dict:
    n = len(labels)
    n_true = sum(bool(x) for x in labels)
    majority = n_true >= n - n_true
    return {"majority_label": majority, "accuracy": (n_true if majority else n - n_true) / n if n else None,
            "share_true": n_true / n if n else None}


def reliability_bins(p_true: Sequence[float], labels: Sequence[bool], bins: int = 10) -> list[dict]:
    """Per confidence bin: count, mean confidence and accuracy of the predicted class (p>=0.5 -> True)."""
    rows = [{"lo": i / bins, "hi": (i + 1) / bins, "n": 0, "conf_sum": 0.0, "correct": 0} for i in range(bins)]
    for p, y in zip(p_true, labels):
        pred = p >= 0.5
        conf = p if pred else 1 - p
        # the small nudge keeps a confidence of exactly 0.7 in [0.7, 0.8) despite 1 - 0.3 = 0.69999...
        i = min(bins - 1, int(conf * bins + 1e-9))
        rows[i]["n"] += 1
        rows[i]["conf_sum"] += conf
        rows[i]["correct"] += int(pred == bool(y))
    return [{"lo": r["lo"], "hi": r["hi"], "n": r["n"],
             "confidence": r["conf_sum"] / r["n"] if r["n"] else None,
             "accuracy": r["correct"] / r["n"] if r["n"] else None} for r in rows]


def expected_calibration_error(p_true: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float | None:
    """Top-label ECE: sum over bins of (bin share) x |accuracy - mean confidence|."""
    n = len(p_true)
    if n == 0:
        return None
    return sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(p_true, labels, bins)
               if b["n"])


def auroc(p_true: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random True example gets a higher p_true than a random False one (ties: 1/2)."""
    pos = [p for p, y in zip(p_true, labels) if y]
    neg = [p for p, y in zip(p_true, labels) if not y]
    if not pos or not neg:
        return None
    # rank-sum form of Mann-Whitney U with average ranks for ties: O(n log n)
    order = sorted(range(len(p_true)), key=lambda i: p_true[i])
    ranks = [0.0] * len(p_true)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and p_true[order[j + 1]] == p_true[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_pos = sum(r for r, y in zip(ranks, labels) if y)
    u = rank_pos - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def brier(p_true: Sequence[float], labels: Sequence[bool]) -> float | None:
    return sum((p - float(bool(y))) ** 2 for p, y in zip(p_true, labels)) / len(p_true) if p_true else None


def calibration(records: Sequence[dict], bins: int = 10) -> dict | None:
    """ECE, Brier, AUROC and reliability bins from the records that carry a p_true (None if none do)."""
    with_p = [r for r in records if r.get("p_true") is not None]
    if not with_p:
        return None
    p = [float(r["p_true"]) for r in with_p]
    y = [bool(r["label"]) for r in with_p]
    return {"n": len(with_p), "bins": bins, "ece": expected_calibration_error(p, y, bins), "brier": brier(p, y),
            "auroc": auroc(p, y), "reliability": reliability_bins(p, y, bins)}


def group_stats(records: Sequence[dict]) -> dict:
    out = accuracy_stats([r["correct"] for r in records])
    preds = [r["prediction"] for r in records]
    out["share_pred_true"] = sum(p is True for p in preds) / len(preds) if preds else None
    out["invalid"] = sum(not r["valid"] for r in records)
    return out


def slice_table(records: Sequence[dict]) -> dict:
    """Accuracy (with interval), share predicted True and invalid count per slice, plus `all`."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups["all"].append(r)
        for s in r.get("slices") or ():
            groups[s].append(r)
    return {g: group_stats(v) for g, v in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0]))}


def confusion(records: Sequence[dict]) -> dict:
    """Counts by gold label (rows) and prediction True/False/invalid (columns)."""
    out = {g: {"True": 0, "False": 0, "invalid": 0} for g in ("True", "False")}
    for r in records:
        col = "invalid" if r["prediction"] is None or not r["valid"] else str(bool(r["prediction"]))
        out[str(bool(r["label"]))][col] += 1
    return out


def compute_metrics(records: Sequence[dict], bins: int = 10) -> dict:
    """Every metric of an eval run from its prediction records (see the module docstring)."""
    records = list(records)
    n = len(records)
    valid = [r for r in records if r["valid"]]
    acc = accuracy_stats([r["correct"] for r in records])
    return {
        "n": n,
        "accuracy": acc["accuracy"],
        "accuracy_ci95": acc["ci95"],
        "correct": acc["correct"],
        "accuracy_valid": accuracy_stats([r["correct"] for r in valid])["accuracy"],
        "invalid": n - len(valid),
        "invalid_rate": (n - len(valid)) / n if n else None,
        "share_pred_true": sum(r["prediction"] is True for r in records) / n if n else None,
        "consistency": consistency(records),
        "pair_consistency": pair_consistency(records),
        "majority_baseline": majority_baseline([r["label"] for r in records]),
        "calibration": calibration(records, bins),
        "confusion": confusion(records),
        "slices": slice_table(records),
    }


def binom_two_sided_exact(k: int, n: int) -> float:
    """Two-sided exact binomial p-value for k of n under p = 1/2 (doubling the smaller tail, capped at 1)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """McNemar's exact test on paired outcomes: b = right in A only, c = right in B only."""
    b = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    return {"a_only_correct": b, "b_only_correct": c, "discordant": b + c, "p_value": binom_two_sided_exact(b, b + c),
            "test": "McNemar exact (two-sided binomial on discordant pairs, p=1/2)"}
