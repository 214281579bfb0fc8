"""Which image matters: P(True) with the left image, the right image or both replaced by a neutral image
of the same size, and with the two swapped, next to the original.

The numbers are score mode's (`scoring.modes.score_batch`: P(True) vs P(False) at the answer position)
on the modified examples, so an occlusion row is exactly what an eval would record for that input. The
neutral image keeps the size (so the visual-token count and positions are unchanged): `mean` fills it
with the image's mean colour, `blur` blurs the image with a Gaussian of radius a tenth of its longer side
(shapes and objects go, the colour layout stays).

A decision flips when P(True) crosses 0.5 (score mode's threshold) relative to the original.
"""

from __future__ import annotations

import dataclasses

from utils.errors import VLMStudiesError
from scoring.modes import batched
from scoring.slices import default_slices

VARIANTS = ("original", "left", "right", "both", "swap")
OCCLUSIONS = VARIANTS[1:]
LABELS = {"original": "original", "left": "left replaced", "right": "right replaced", "both": "both replaced",
          "swap": "left and right swapped"}
OCCLUDERS = ("mean", "blur")


def neutral_image(img, occluder: str = "mean"):
    """A stand-in for `img` with its size and none of its content (`mean` colour, or heavily `blur`red)."""
    from PIL import Image, ImageFilter, ImageStat

    img = img.convert("RGB")
    if occluder == "mean":
        return Image.new("RGB", img.size, tuple(int(round(c)) for c in ImageStat.Stat(img).mean))
    if occluder == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=max(2.0, max(img.size) / 10)))
    raise VLMStudiesError(f"unknown occluder '{occluder}'; choose {' or '.join(OCCLUDERS)}")


def variants(example, occluder: str = "mean") -> list:
    """The example as it is, then with left / right / both replaced, then swapped (order of `VARIANTS`)."""
    left, right = neutral_image(example.left, occluder), neutral_image(example.right, occluder)
    return [example, dataclasses.replace(example, left=left), dataclasses.replace(example, right=right),
            dataclasses.replace(example, left=left, right=right),
            dataclasses.replace(example, left=example.right, right=example.left)]


def occlusion_p_true(model, processor, examples: list, template="tf", occluder: str = "mean",
                     batch_size: int = 4) -> list[dict]:
    """Per example `{variant: p_true}`; each forward pass scores `batch_size` examples x 5 variants."""
    from scoring.look import look_batch

    out = []
    for batch in batched(examples, batch_size):
        out += [r["p_true"] for r in look_batch(model, processor, batch, template, occluder, record=False)]
    return out


def effects(p: dict) -> dict:
    """`{occlusion: {p_true, delta, flip}}` from `{variant: p_true}`."""
    base = p["original"]
    return {v: {"p_true": p[v], "delta": p[v] - base, "flip": (p[v] >= 0.5) != (base >= 0.5)} for v in OCCLUSIONS}


def summarise(records: list[dict], model_key: str) -> dict:
    """Per group (`all`, `family:*`, `kw:*`): n, accuracy of the original, and per occlusion the mean
    |dP(True)|, the mean signed dP(True), the share of decisions that flip and the accuracy after it."""
    groups: dict[str, list] = {}
    for r in records:
        m = r["models"].get(model_key)
        if m is None:
            continue
        for g in dict.fromkeys(["all", *r.get("slices", [])]):
            groups.setdefault(g, []).append((r["label"], m["p_true"]))
    out = {}
    for g, rows in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        n = len(rows)
        entry = {"n": n, "accuracy": sum((p["original"] >= 0.5) == y for y, p in rows) / n}
        for v in OCCLUSIONS:
            d = [p[v] - p["original"] for _, p in rows]
            entry[v] = {"mean_abs_delta": sum(abs(x) for x in d) / n, "mean_delta": sum(d) / n,
                        "flip_share": sum((p[v] >= 0.5) != (p["original"] >= 0.5) for _, p in rows) / n,
                        "accuracy": sum((p[v] >= 0.5) == y for y, p in rows) / n}
        out[g] = entry
    return out


def format_summary(summary: dict, groups=None) -> str:
    """A fixed-width table: per group, mean |dP(True)| and flip share for each occlusion."""
    head = f"{'group':<26}{'n':>5} {'acc':>6}  " + "  ".join(f"{v + ' |d|/flip':>17}" for v in OCCLUSIONS)
    lines = [head]
    for g, e in summary.items():
        if groups is not None and g not in groups:
            continue
        cells = "  ".join(f"{e[v]['mean_abs_delta']:>8.3f} / {100 * e[v]['flip_share']:>5.1f}%" for v in OCCLUSIONS)
        lines.append(f"{g:<26}{e['n']:>5} {100 * e['accuracy']:>5.1f}%  {cells}")
    return "\n".join(lines)


def fixed_subset_summary(model, processor, examples: list, template: str, batch_size: int,
                         occluder: str = "mean") -> dict:
    """The occlusion summary of `examples` under `model` as it is now (for training dynamics)."""

    ps = occlusion_p_true(model, processor, examples, template, occluder, batch_size)
    records = [{"label": bool(ex.label), "slices": default_slices(ex), "models": {"model": {"p_true": p}}}
               for ex, p in zip(examples, ps)]
    return summarise(records, "model")
