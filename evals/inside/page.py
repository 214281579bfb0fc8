"""The look-inside pages: one offline HTML page per uid, and one per split run.

A uid page's pictures are PNGs beside it (or, with `inline`, inside it as data URIs); its folder is
written aside and swapped in (`utils.io.output_dir`), so only a folder this tool wrote is ever
replaced. The split page sits in the split run's folder beside occlusion.jsonl and carries its
pictures inside it, so nothing there is ever deleted. No page loads anything from the network. The
numbers behind the pictures are in `inside.json` (uid) and `summary.json` / `occlusion.jsonl` (split).
"""

from __future__ import annotations

from pathlib import Path

from evals.inside import figures
from evals.report import _e, _thumb_png, _Assets, CSS
from scoring.occlusion import LABELS, OCCLUSIONS, VARIANTS
from utils.io import atomic_write_json, atomic_write_text, output_dir

EXPLAIN = """<p class=muted>All P(True) values are score mode's: the probability of the True answer token at the
answer position, renormalised over the True and False tokens only. <b>Occlusion</b>: the image is replaced by
a neutral image of the same size ({occluder}), so the visual-token count and positions do not change; a
decision flips when P(True) crosses 0.5. <b>Logit lens</b>: the model's final norm and lm_head applied to the
answer position's hidden state after every layer (emb = before the first layer; the last point is the
model's own output). <b>Attention</b>: the answer position's attention row per layer (mean over heads), on
each image's 28x28-pixel cells after the processor's resize (one visual token per cell, 2x2 patches merged);
the rest of the row goes to the text (prompt, special tokens, the answer slot itself).</p>"""
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body>
<h1>{title}</h1>
{body}
</body></html>
"""


TOOL = "scripts/look_inside.py"  # named in the marker of every uid page folder (utils.io.output_dir)


def _info_table(rows: list[tuple]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def occlusion_table(models: dict) -> str:
    """HTML: one row per variant; per model state P(True), its change and whether the decision flips."""
    head = "<tr><th>input</th>" + "".join(f"<th colspan=3>{_e(m['label'])}</th>" for m in models.values()) + "</tr>"
    head += "<tr><th></th>" + "<th>P(True)</th><th>change</th><th>decision</th>" * len(models) + "</tr>"
    rows = []
    for v in VARIANTS:
        cells = []
        for m in models.values():
            if v == "original":
                p = m["p_true"]["original"]
                cells.append(f"<td class=num>{p:.4f}</td><td></td><td>{'True' if p >= 0.5 else 'False'}</td>")
            else:
                e = m["occlusion"][v]
                cls = "bad" if e["flip"] else ""
                cells.append(f"<td class=num>{e['p_true']:.4f}</td><td class=num>{e['delta']:+.4f}</td>"
                             f"<td class='{cls}'>{'flips' if e['flip'] else 'same'}</td>")
        rows.append(f"<tr><td>{_e(LABELS[v])}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def write_uid_page(html_path: Path, example, result: dict, inline: bool = False) -> Path:
    """The page of one uid: images, occlusion table and bars, logit lens, attention shares and overlays.

    Written aside and swapped into `html_path.parent`, which may only be new, empty or an earlier page.
    """
    with output_dir(html_path.parent, TOOL, hint="pass another --run_name") as tmp:
        _write_uid_page_into(tmp, html_path, example, result, inline)
    return html_path


def _write_uid_page_into(folder: Path, html_path: Path, example, result: dict, inline: bool) -> None:
    assets = _Assets(folder, inline)
    models = result["models"]
    labels = [m["label"] for m in models.values()]
    occluder = result["occluder"]
    thumbs = (assets.img("left.png", _thumb_png(example.left), "left image")
              + assets.img("right.png", _thumb_png(example.right), "right image"))
    sizes = ", ".join(f"{im['side']} {im['size'][0]}x{im['size'][1]} px -> {im['grid'][1]}x{im['grid'][2]} cells"
                      for im in next(iter(models.values()))["layout"])
    info = _info_table([("statement", result["sentence"]), ("label", result["label"]),
                        ("family / slices", ", ".join(result["slices"]) or "-"),
                        ("model", result["model"]), ("adapter", result["adapter"] or "none (zero-shot)"),
                        ("data", f"{result['source']} [{result['split']}]"), ("template", result["template"]),
                        ("visual tokens", sizes),
                        ("git / date", f"{result['git_sha']}{' (dirty)' if result['git_dirty'] else ''} / "
                                       f"{result['date']}"),
                        ("command", result["command"])])
    occ_png = assets.img("occlusion.png", figures.occlusion_png({m["label"]: m["p_true"] for m in models.values()},
                                                                f"{result['uid']}: P(True) by input ({occluder})"),
                         "occlusion bars")
    styles = [{"color": figures.MODEL_COLORS[i % len(figures.MODEL_COLORS)]} for i in range(len(models))]
    lens = assets.img("lens.png", figures.lens_png(
        [(m["label"], m["lens"]["p_true"], s) for m, s in zip(models.values(), styles)],
        f"{result['uid']}: logit lens at the answer position (label {result['label']})",
        mass=[(m["label"], m["lens"]["answer_mass"], s) for m, s in zip(models.values(), styles)]), "logit lens")
    shares = assets.img("shares.png", figures.shares_png({m["label"]: m["shares"] for m in models.values()},
                                                         "share of the answer position's attention, per layer"),
                        "attention shares")
    overlays = ""
    for key, m in models.items():
        overlays += f"<h3>{_e(m['label'])}</h3>" + assets.img(
            f"overlay-{key}.png", figures.overlay_png(example.images, m, f"{m['label']}: attention of the answer "
                                                                          f"position on each image cell"),
            f"attention overlays, {m['label']}")
        if "head_shares" in m:
            overlays += assets.img(f"heads-{key}.png", figures.head_shares_png(
                m["head_shares"], f"{m['label']}: share of each head's attention on each image"),
                f"per-head attention shares, {m['label']}")
    lens_rows = "".join(f"<tr><td>{_e(m['label'])}</td>" + "".join(f"<td class=num>{p:.3f}</td>"
                                                                   for p in m["lens"]["p_true"]) + "</tr>"
                        for m in models.values())
    n_layers = len(next(iter(models.values()))["lens"]["p_true"]) - 1
    lens_head = "<tr><th></th><th>emb</th>" + "".join(f"<th>{i}</th>" for i in range(1, n_layers + 1)) + "</tr>"
    atomic_write_json(folder / "inside.json", result)
    body = f"""<p class=muted>{_e(html_path)} &middot; written by scripts/look_inside.py; opens offline &middot;
numbers in <a href="inside.json">inside.json</a></p>
<div>{thumbs}</div>
{info}
{EXPLAIN.format(occluder=_e(occluder))}
<h2>Which image matters (occlusion)</h2>
{occlusion_table(models)}
<div class=plots>{occ_png}</div>
<h2>Where the answer forms (logit lens)</h2>
<table>{lens_head}{lens_rows}</table>
<div class=plots>{lens}</div>
<h2>Where it looks (attention at the answer position)</h2>
<div class=plots>{shares}</div>
{overlays}
"""
    title = f"Inside {result['uid']}: {' vs '.join(labels)}"
    (folder / "index.html").write_text(PAGE.format(title=_e(title), css=CSS + ".plots img{max-width:100%}",
                                                   body=body), encoding="utf-8")


def _summary_table(summary: dict, groups: list[str]) -> str:
    states = summary["states"]
    head = "<tr><th>group</th><th>n</th><th>model</th><th>accuracy</th>" + "".join(
        f"<th>{_e(LABELS[v])}<br>mean |change| / flips</th>" for v in OCCLUSIONS) + "</tr>"
    rows = []
    for g in groups:
        for k, label in states.items():
            e = summary["occlusion"][k].get(g)
            if not e:
                continue
            cells = "".join(f"<td class=num>{e[v]['mean_abs_delta']:.3f} / {100 * e[v]['flip_share']:.1f}%</td>"
                            for v in OCCLUSIONS)
            rows.append(f"<tr><td>{_e(g)}</td><td class=num>{e['n']}</td><td>{_e(label)}</td>"
                        f"<td class=num>{100 * e['accuracy']:.1f}%</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _top_uids(records: list[dict], key: str, command: str, n: int = 5) -> str:
    parts = []
    for v in OCCLUSIONS:
        def change(r, v=v):
            p = r["models"][key]["p_true"]
            return abs(p[v] - p["original"])

        ranked = sorted(records, key=change, reverse=True)
        items = "".join(f"<li><code>{_e(r['uid'])}</code> {_e(r['sentence'])} (label {r['label']}): "
                        f"{r['models'][key]['p_true']['original']:.3f} -&gt; {r['models'][key]['p_true'][v]:.3f}</li>"
                        for r in ranked[:n])
        parts.append(f"<h3>{_e(LABELS[v])}</h3><ul>{items}</ul>")
    return (f"<p class=muted>Look inside any of them: <code>{_e(command)} --uid UID</code></p>" + "".join(parts))


def write_split_page(folder: Path, records: list[dict], summary: dict, opts, meta: dict, command: str) -> Path:
    """`<folder>/index.html`: the occlusion summary per group, the logit lens and attention per family. The
    pictures are inside the page (data URIs), so the run folder holds no picture files to go stale."""
    assets = _Assets(folder, inline=True)
    groups = list(summary["occlusion"][next(iter(summary["states"]))])
    families = [g for g in groups if g.startswith("family:")] or ["all"]
    labels = summary["states"]
    occ = {labels[k]: summary["occlusion"][k] for k in labels}
    pictures = assets.img("occlusion-delta.png", figures.summary_png(
        occ, families, "mean |change in P(True)| when an image is replaced or the two are swapped"), "occlusion")
    pictures += assets.img("occlusion-flips.png", figures.summary_png(
        occ, families, "share of decisions that flip", key="flip_share"), "flips")
    lens = assets.img("lens.png", figures.split_lens_png(
        {labels[k]: summary["lens"][k] for k in labels}, families,
        "logit lens: mean P(True) per layer, over examples labelled True (solid) and False (dotted)"), "lens")
    shares = "".join(assets.img(f"shares-{k}.png", figures.shares_png(
        {g.removeprefix("family:"): summary["shares"][k][g] for g in families if g in summary["shares"][k]},
        f"{labels[k]}: mean share of the answer position's attention, per layer"), "attention shares")
        for k in labels)
    first = next(iter(labels))
    info = _info_table([("model", opts.model), ("adapter", opts.adapter or "none (zero-shot)"),
                        ("data", f"{opts.source} [{opts.split}], {len(records)} examples"
                                 + (f" (limit {opts.limit})" if opts.limit else "")),
                        ("template / occluder", f"{opts.template} / {opts.occluder}"),
                        ("git / date", f"{meta.get('git_sha')}{' (dirty)' if meta.get('git_dirty') else ''} / "
                                       f"{meta.get('date')}"), ("command", command)])
    body = f"""<p class=muted>{_e(folder)} &middot; written by scripts/look_inside.py; opens offline &middot; numbers in
<a href="summary.json">summary.json</a> and <a href="occlusion.jsonl">occlusion.jsonl</a></p>
{info}
{EXPLAIN.format(occluder=_e(opts.occluder))}
<h2>Which image matters (occlusion), per group</h2>
{_summary_table(summary, groups)}
<div class=plots>{pictures}</div>
<h2>Where the answer forms (logit lens)</h2>
<div class=plots>{lens}</div>
<h2>Where it looks (attention at the answer position)</h2>
<div class=plots>{shares}</div>
<h2>Largest changes ({_e(labels[first])})</h2>
{_top_uids(records, first, command)}
"""
    html_path = folder / "index.html"
    title = f"Inside {opts.model}{' + ' + opts.adapter if opts.adapter else ''} on {opts.split}"
    atomic_write_text(html_path, PAGE.format(title=_e(title), css=CSS + ".plots img{max-width:100%}", body=body))
    return html_path
