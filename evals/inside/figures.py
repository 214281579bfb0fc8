"""The look-inside figures (matplotlib, Agg, PNG bytes): occlusion bars, logit-lens curves, attention
overlays and shares, and the split and training-dynamics summaries."""

from __future__ import annotations

import math

from scoring.occlusion import LABELS, OCCLUSIONS, VARIANTS
from evals.report import _plt, _png

# one colour per model state; the base model is always grey so "before" reads the same everywhere
MODEL_COLORS = ("#1f6fb4", "#8c8c8c", "#d35400", "#27ae60")
SIDE_COLORS = {"left": "#1f6fb4", "right": "#c0392b", "text": "#8c8c8c"}
ANNOTATE_CELLS = 36  # overlays write the value of each cell when an image has at most this many


def _layer_ticks(ax, n: int) -> None:
    step = max(1, math.ceil(n / 15))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, ["emb" if t == 0 else str(t) for t in ticks])
    ax.set_xlim(-0.3, n - 0.7)


# ----------------------------------------------------------------------------- one example

def occlusion_png(models: dict, title: str) -> bytes:
    """Horizontal bars: P(True) for each variant (original first), one bar per model state."""
    plt = _plt()
    names = list(models)
    h = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.55 * len(VARIANTS) * max(1, len(names)) ** 0.5), dpi=100)
    for j, name in enumerate(names):
        ys = [i + (j - (len(names) - 1) / 2) * h for i in range(len(VARIANTS))]
        vals = [models[name][v] for v in VARIANTS]
        ax.barh(ys, vals, height=h * 0.9, color=MODEL_COLORS[j % len(MODEL_COLORS)], label=name)
        for y, v in zip(ys, vals):
            ax.text(min(v + 0.01, 0.9), y, f"{v:.3f}", va="center", fontsize=7)
    ax.axvline(0.5, color="black", lw=0.8, ls="--")
    ax.set_yticks(range(len(VARIANTS)), [LABELS[v] for v in VARIANTS])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(True) at the answer position (True vs False only, as in score mode)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig, plt)


def lens_png(curves: list[tuple], title: str, mass: list[tuple] | None = None) -> bytes:
    """P(True) read out after every layer (`curves`: (label, values, style dict)); below it, when given, the
    probability the full-vocabulary readout puts on the two answer tokens together."""
    plt = _plt()
    n = max(len(c[1]) for c in curves)
    rows = 2 if mass else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6.4, 3.2 + 1.6 * (rows - 1)), dpi=100, sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1][:rows]})
    ax = axes[0][0]
    for label, values, style in curves:
        ax.plot(range(len(values)), values, marker="o", ms=3, label=label, **style)
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("P(True)\n(True vs False only)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    if mass:
        mx = axes[1][0]
        for label, values, style in mass:
            mx.plot(range(len(values)), values, marker=".", ms=3, label=label, **style)
        mx.set_ylim(-0.02, 1.02)
        mx.set_ylabel("P(True)+P(False)\n(full vocabulary)")
    _layer_ticks(axes[-1][0], n)
    axes[-1][0].set_xlabel("layer (emb = embeddings entering layer 1; last = the model's own output)")
    fig.tight_layout()
    return _png(fig, plt)


def overlay_png(images: list, detail: dict, title: str, head: int | None = None) -> bytes:
    """Attention of the answer position on each cell of both images: the mean over layers, then every layer.

    Cells are darkened in proportion to how far their attention is below the panel's maximum over both
    images (so left and right compare within a panel; the brightest cell is the most attended); its title
    gives the share of the whole attention row that each image receives, and images of few cells carry each
    cell's share of the row.
    """
    plt = _plt()
    cells = detail["cells"] if head is None else [layer[head] for layer in detail["head_cells"]]
    shares = detail["shares"] if head is None else [layer[head] for layer in detail["head_shares"]]
    sides = [im["side"] for im in detail["layout"]]
    n = len(cells)
    mean_cells = {s: [[sum(cells[layer][s][r][c] for layer in range(n)) / n for c in range(len(cells[0][s][0]))]
                      for r in range(len(cells[0][s]))] for s in sides}
    mean_shares = {k: sum(sh[k] for sh in shares) / n for k in shares[0]}
    panels = [("mean over layers", mean_cells, mean_shares)] + [(f"layer {i + 1}", cells[i], shares[i])
                                                                 for i in range(n)]
    per_row = min(4, len(panels))
    rows = math.ceil(len(panels) / per_row)
    width = 2.1 * len(sides)
    fig, axes = plt.subplots(rows, per_row * len(sides), figsize=(width * per_row, 2.5 * rows + 0.5), dpi=90,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for p, (name, grid, share) in enumerate(panels):
        r, c0 = divmod(p, per_row)
        vmax = max(max(max(row) for row in grid[s]) for s in sides) or 1.0
        for j, (side, img) in enumerate(zip(sides, images)):
            ax = axes[r][c0 * len(sides) + j]
            w, h = img.size
            ax.imshow(img, extent=(0, w, h, 0))
            # a spotlight: cells are darkened by how little attention they get, so the most attended cell
            # shows its true colours (a colour map over the photo would hide them)
            shade = [[[0.0, 0.0, 0.0, 0.8 * (1 - v / vmax)] for v in line] for line in grid[side]]
            ax.imshow(shade, extent=(0, w, h, 0), interpolation="nearest")
            rows_, cols_ = len(grid[side]), len(grid[side][0])
            if rows_ * cols_ <= ANNOTATE_CELLS:  # few cells (the synthetic set's 2x2): write each one's share
                for r_, line in enumerate(grid[side]):
                    for c_, v in enumerate(line):
                        ax.text((c_ + 0.5) * w / cols_, (r_ + 0.5) * h / rows_, f"{100 * v:.1f}%", ha="center",
                                va="center", fontsize=7, color="white",
                                bbox={"boxstyle": "round,pad=0.15", "fc": "black", "alpha": 0.45, "lw": 0})
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_title(f"{name}\n{side} {100 * share[side]:.1f}%" if j == 0 else f"\n{side} {100 * share[side]:.1f}%",
                         fontsize=8, loc="left" if j == 0 else "right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig, plt)


def shares_png(models: dict, title: str) -> bytes:
    """Share of the answer position's attention on the left image, the right image and the text, per layer;
    one panel per model state (stacked bars)."""
    plt = _plt()
    names = list(models)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names) + 0.6, 2.9), dpi=100, squeeze=False,
                             sharey=True)
    for ax, name in zip(axes[0], names):
        shares = models[name]
        xs = range(1, len(shares) + 1)
        bottom = [0.0] * len(shares)
        for key in ("left", "right", "text"):
            vals = [s.get(key, 0.0) for s in shares]
            ax.bar(xs, vals, bottom=bottom, color=SIDE_COLORS[key], label=key if key != "text" else "text and rest")
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("layer")
        step = max(1, math.ceil(len(shares) / 10))
        ax.set_xticks(list(xs)[::step])
    axes[0][0].set_ylabel("share of attention")
    axes[0][0].set_ylim(0, 1)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.84))
    fig.legend(handles, names, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.93), ncol=3, frameon=False)
    return _png(fig, plt)


def head_shares_png(head_shares: list, title: str) -> bytes:
    """Per layer and head: the share of attention on the left and on the right image (one heat map each)."""
    plt = _plt()
    sides = [k for k in head_shares[0][0] if k != "text"]
    fig, axes = plt.subplots(1, len(sides), figsize=(max(6.0, 1.5 + 0.4 * len(head_shares[0]) * len(sides)),
                                                     max(2.8, 1.4 + 0.28 * len(head_shares))), dpi=100,
                             squeeze=False, layout="constrained")
    vmax = max(h[s] for layer in head_shares for h in layer for s in sides) or 1.0
    for ax, side in zip(axes[0], sides):
        grid = [[h[side] for h in layer] for layer in head_shares]
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        ax.set_title(f"share on the {side} image", fontsize=8)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(len(grid[0])))
        ax.set_yticks(range(len(grid)), [str(i + 1) for i in range(len(grid))])
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.05, label="share of the head's attention row")
    fig.suptitle(title, fontsize=9)
    return _png(fig, plt)


# ----------------------------------------------------------------------------- a split

def summary_png(summaries: dict, groups: list[str], title: str, key: str = "mean_abs_delta") -> bytes:
    """Per group: mean |dP(True)| (or the flip share, `key`) of each occlusion, one bar per model state."""
    plt = _plt()
    names = list(summaries)
    groups = [g for g in groups if any(g in s for s in summaries.values())]
    fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups) + 0.8, 3.0), dpi=100, squeeze=False,
                             sharey=True)
    w = 0.8 / max(1, len(names))
    for ax, g in zip(axes[0], groups):
        for j, name in enumerate(names):
            e = summaries[name].get(g)
            if not e:
                continue
            xs = [i + (j - (len(names) - 1) / 2) * w for i in range(len(OCCLUSIONS))]
            ax.bar(xs, [e[v][key] for v in OCCLUSIONS], width=w * 0.9, color=MODEL_COLORS[j % len(MODEL_COLORS)],
                   label=name)
        n = next(s[g]["n"] for s in summaries.values() if g in s)
        ax.set_title(f"{g.removeprefix('family:')} (n={n})", fontsize=8)
        ax.set_xticks(range(len(OCCLUSIONS)), [v for v in OCCLUSIONS], fontsize=7)
        ax.set_xlabel("image(s) replaced, or swapped", fontsize=7)
    axes[0][0].set_ylabel("mean |dP(True)|" if key == "mean_abs_delta" else "share of decisions flipped")
    axes[0][0].set_ylim(0, 1)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig, plt)


def split_lens_png(lens: dict, groups: list[str], title: str) -> bytes:
    """Mean P(True) per layer over the examples labelled True and over those labelled False, per group; each
    model state in its colour (the gap between the two lines is where the answer forms)."""
    plt = _plt()
    names = list(lens)
    groups = [g for g in groups if any(g in v for v in lens.values())]
    fig, axes = plt.subplots(1, len(groups), figsize=(2.9 * len(groups) + 0.8, 3.0), dpi=100, squeeze=False,
                             sharey=True)
    for ax, g in zip(axes[0], groups):
        n = 0
        for j, name in enumerate(names):
            e = lens[name].get(g)
            if not e:
                continue
            color = MODEL_COLORS[j % len(MODEL_COLORS)]
            for label, ls in (("true", "-"), ("false", ":")):
                values = e.get(f"label_{label}")
                if values:
                    ax.plot(range(len(values)), values, ls=ls, marker="o", ms=2.5, color=color,
                            label=f"{name}, label {label.capitalize()}")
            n = e["n"]
            _layer_ticks(ax, len(e.get("label_true") or e.get("label_false")))
        ax.axhline(0.5, color="black", lw=0.6, ls="--")
        ax.set_title(f"{g.removeprefix('family:')} (n={n})", fontsize=8)
        ax.set_xlabel("layer")
    axes[0][0].set_ylabel("mean P(True) (True vs False only)")
    axes[0][0].set_ylim(-0.02, 1.02)
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig, plt)


# ----------------------------------------------------------------------------- training dynamics

def dynamics_png(steps: list[dict], title: str) -> bytes:
    """Accuracy per family over training steps (and, when recorded, what occluding each image does)."""
    plt = _plt()
    with_occ = any(s.get("occlusion") for s in steps)
    fig, axes = plt.subplots(1, 2 if with_occ else 1, figsize=(11 if with_occ else 6, 3.4), dpi=100, squeeze=False)
    ax = axes[0][0]
    families = sorted({f for s in steps for f in s.get("accuracy", {})}, key=lambda f: (f == "all", f))
    for f in families:
        pts = [(s["step"], s["accuracy"][f]["accuracy"]) for s in steps if f in s.get("accuracy", {})]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f,
                lw=2.2 if f == "all" else 1.2, color="black" if f == "all" else None)
    ax.axhline(0.5, color="gray", lw=0.6, ls="--")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("accuracy on the fixed subset (score mode)")
    ax.legend(fontsize=7)
    if with_occ:
        ax = axes[0][1]
        occ_steps = [s for s in steps if s.get("occlusion")]
        groups = sorted({g for s in occ_steps for g in s["occlusion"] if g.startswith("family:grounding")}) or ["all"]
        for g, color in zip(groups, ("#1f6fb4", "#c0392b", "#27ae60", "#8e44ad")):
            for side, ls in (("left", "-"), ("right", "--")):
                pts = [(s["step"], s["occlusion"][g][side]["mean_abs_delta"]) for s in occ_steps if g in s["occlusion"]]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker="o", ms=3, color=color,
                        label=f"{g.removeprefix('family:')}: {side} replaced")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("mean |dP(True)|, image replaced")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig, plt)


def loss_png(log: list[dict], title: str) -> bytes:
    plt = _plt()
    pts = [(r["step"], r["loss"]) for r in log if "loss" in r and "step" in r]
    fig, ax = plt.subplots(figsize=(6, 2.8), dpi=100)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", color="#34495e")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig, plt)
