"""Error analysis of an eval run as an HTML report that opens offline.

    write_report(run_dir)                        -> <run_dir>/report/index.html (+ PNGs beside it)
    write_report(run_dir, compare=other_run_dir) -> <run_dir>/report-vs-<other>/index.html

The report holds the headline metrics, a confusion matrix and a reliability diagram (matplotlib,
Agg backend, PNG), the slice table, and a gallery of mistakes (most confident first) showing the
two images side by side with statement, label, prediction, p_true, the command that inspects
that uid and a link to its look-inside page (`evals.inside`; the command that makes it while it does
not exist). With `compare` it lists the uids that flipped each way between the two runs, with
McNemar's exact test. Everything the page shows lives in its folder (or, with `inline`, inside the
HTML as data URIs): no scripts, fonts or styles from the network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shlex
import sys
from pathlib import Path

from evals.runner import budget_line, data_line
from scoring.metrics import compute_metrics, consistency, mcnemar
from scoring.predictions import read_predictions, FILENAME
from utils.errors import closest, VLMStudiesError
from utils.io import atomic_write_json, files_match, output_dir
from utils.paths import existing_names, path_inside, safe_file_stem
from vlm_datasets.nlvr2 import load_nlvr2, BadRow, COLUMN_ALIASES

THUMB = 280  # longest side of a gallery image, pixels
TOOL = "scripts/analyze.py"  # named in the marker of every report folder (utils.io.output_dir)


# ----------------------------------------------------------------------------- loading a run

def load_run(run_dir: str | Path) -> dict:
    """`{dir, name, metrics, records, config, meta}` of an eval run dir; clear errors if it is not one."""
    import yaml

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():

        raise VLMStudiesError(f"eval run dir {run_dir} does not exist{closest(str(run_dir), existing_names(run_dir))}; "
                              f"runs live in <root>/evals/<run_name>/")
    if not (run_dir / "metrics.json").is_file():
        hint = " (predictions exist: run the same evaluate.py command again to finish it)" \
            if (run_dir / FILENAME).is_file() else ""
        raise VLMStudiesError(f"{run_dir} holds no metrics.json, so it is not a finished eval run{hint}")
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    records = read_predictions(run_dir / FILENAME)
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) \
        if (run_dir / "config.yaml").is_file() else {}
    meta = json.loads((run_dir / "run_meta.json").read_text(encoding="utf-8")) \
        if (run_dir / "run_meta.json").is_file() else {}
    return {"dir": run_dir, "name": metrics.get("run_name", run_dir.name), "metrics": metrics, "records": records,
            "config": config or {}, "meta": meta}


def inspect_command(uid: str, run: dict) -> str:
    """The shell command that inspects `uid`; every value quoted, since uids and sources come from the data."""
    cfg = run["config"]
    source = cfg.get("source") or run["metrics"].get("dataset", {}).get("source")
    argv = ["python", "scripts/inspect_sample.py", "--uid", str(uid), "--source", str(source),
            "--split", str(run["metrics"].get("split"))]
    if cfg.get("mode") == "cached":
        argv += ["--mode", "cached"]
    return shlex.join(argv)


# ----------------------------------------------------------------------------- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display needed (servers, CI, Colab background)
    import matplotlib.pyplot as plt

    return plt


def confusion_png(confusion: dict) -> bytes:
    """Gold label (rows) x prediction True/False/invalid (columns), counts and row shares."""
    plt = _plt()
    rows, cols = ["True", "False"], ["True", "False", "invalid"]
    if not any(confusion[r]["invalid"] for r in rows):
        cols = cols[:2]
    counts = [[confusion[r][c] for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(cols), 3.0), dpi=100)
    ax.imshow([[c / max(1, sum(row)) for c in row] for row in counts], cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            share = c / max(1, sum(row))
            ax.text(j, i, f"{c}\n{share:.0%}", ha="center", va="center", color="white" if share > 0.6 else "black")
    ax.set_xticks(range(len(cols)), [f"pred {c}" for c in cols])
    ax.set_yticks(range(2), [f"gold {r}" for r in rows])
    ax.set_title("confusion matrix")
    fig.tight_layout()
    return _png(fig, plt)


def reliability_png(calibration: dict) -> bytes:
    """Accuracy vs mean confidence per confidence bin (bar widths = bins), with the diagonal."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    bins = [b for b in calibration["reliability"] if b["n"]]
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="perfect calibration")
    ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=[b["hi"] - b["lo"] for b in bins],
           align="edge", color="#4a7ab5", edgecolor="white", alpha=0.85, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#c0392b", ms=4,
            label="(mean confidence, accuracy)")
    for b in bins:
        ax.text(b["lo"] + (b["hi"] - b["lo"]) / 2, min(0.97, b["accuracy"] + 0.02), str(b["n"]), ha="center",
                fontsize=7)
    lo = min([b["lo"] for b in bins] + [0.5])
    ax.set_xlim(lo, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the predicted answer")
    ax.set_ylabel("accuracy")
    ece = calibration.get("ece")
    ax.set_title(f"reliability (ECE {ece:.3f}, n={calibration['n']})" if ece is not None else "reliability")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig, plt)


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _thumb_png(img) -> bytes:
    img = img.copy()
    img.thumbnail((THUMB, THUMB))
    if img.width < 96:  # tiny synthetic images: scale up so shapes are visible (nearest keeps edges crisp)
        from PIL import Image

        k = -(-96 // img.width)  # ceil
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- images of mistakes

def find_images(run: dict, uids: list[str], root=None) -> tuple[dict, str | None]:
    """`({uid: (left PIL, right PIL)}, problem)`: the images of `uids`, read from the run's source.

    Reads raw rows and decodes only the wanted ones, stopping once all are found. When the source
    cannot be read (offline, moved) the gallery is shown without images and `problem` says why.
    """
    if not uids:
        return {}, None
    cfg, m = run["config"], run["metrics"]
    source = cfg.get("source") or m.get("dataset", {}).get("source")
    split = m.get("split") or cfg.get("split")
    want, found = set(uids), {}
    try:
        data = load_nlvr2(source, split, cfg.get("mode") or "streaming", root=root, quiet=True,
                          min_pixels=cfg.get("min_pixels"), max_pixels=cfg.get("max_pixels"))
        for row in data.raw_rows():
            uid = next((str(row[c]) for c in COLUMN_ALIASES["uid"] if c in row), None)
            if uid in want and uid not in found:
                try:
                    ex = data.normalise(row)
                except BadRow:
                    continue
                found[uid] = (ex.left, ex.right)
                if len(found) == len(want):
                    break
    except VLMStudiesError as exc:
        return found, str(exc)
    missing = want - set(found)
    return found, (f"{len(missing)} uid(s) not found in {source} [{split}]" if missing else None)


def pick_mistakes(records: list[dict], n: int) -> list[dict]:
    """Wrong answers, most confident first (invalid answers after those, in file order)."""
    wrong = [r for r in records if not r["correct"]]

    def confidence(r):
        p = r.get("p_true")
        if not r["valid"] or p is None:
            return -1.0
        return p if r["prediction"] else 1 - p

    return sorted(wrong, key=lambda r: -confidence(r))[:n]


# ----------------------------------------------------------------------------- comparison

def compare_runs(a: dict, b: dict) -> dict:
    """Flips between run A (this report) and run B on the uids both evaluated, with McNemar's exact test."""
    rb = {r["uid"]: r for r in b["records"]}
    shared = [r for r in a["records"] if r["uid"] in rb]
    if not shared:
        raise VLMStudiesError(f"runs {a['dir']} and {b['dir']} share no uids; compare runs on the same task and split")
    a_right_b_wrong = [r["uid"] for r in shared if r["correct"] and not rb[r["uid"]]["correct"]]
    a_wrong_b_right = [r["uid"] for r in shared if not r["correct"] and rb[r["uid"]]["correct"]]
    test = mcnemar([r["correct"] for r in shared], [rb[r["uid"]]["correct"] for r in shared])
    warn = []
    for key in ("task", "split"):
        if a["metrics"].get(key) != b["metrics"].get(key):
            warn.append(f"{key} differs: {a['metrics'].get(key)} vs {b['metrics'].get(key)}")
    if len(shared) < max(len(a["records"]), len(b["records"])):
        warn.append(f"only {len(shared)} uids are in both runs ({len(a['records'])} and {len(b['records'])} in each)")
    return {"a": a["name"], "b": b["name"], "a_dir": str(a["dir"]), "b_dir": str(b["dir"]), "shared": len(shared),
            "accuracy_a": sum(r["correct"] for r in shared) / len(shared),
            "accuracy_b": sum(rb[r["uid"]]["correct"] for r in shared) / len(shared),
            "right_in_a_only": a_right_b_wrong, "right_in_b_only": a_wrong_b_right, "mcnemar": test,
            "warnings": warn}


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777;font-size:12px} .plots img{margin-right:16px;vertical-align:top}
.card{display:inline-block;vertical-align:top;width:600px;border:1px solid #ddd;border-radius:6px;padding:8px;
margin:0 12px 12px 0} .card img{height:200px;image-rendering:pixelated;margin-right:6px;border:1px solid #eee}
code{background:#f6f6f6;padding:1px 4px;font-size:12px;word-break:break-all} .bad{color:#b03a2e} .good{color:#1e8449}
.warn{background:#fff3cd;padding:6px 10px;border-radius:4px}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _pct(x, digits=1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


class _Assets:
    """Writes images next to the HTML (or inlines them) and remembers every file it wrote."""

    def __init__(self, folder: Path, inline: bool):
        self.folder, self.inline, self.written = folder, inline, []

    def img(self, name: str, data: bytes, alt: str, cls: str = "") -> str:
        if self.inline:
            src = "data:image/png;base64," + base64.b64encode(data).decode()
        else:
            (self.folder / "img").mkdir(parents=True, exist_ok=True)
            path = path_inside(self.folder / "img", name)
            path.write_bytes(data)
            self.written.append(path)
            src = f"img/{name}"
        return f'<img src="{_e(src)}" alt="{_e(alt)}"{f" class={cls!r}" if cls else ""}>'


def _safe(uid: str) -> str:
    return safe_file_stem(uid)  # a uid is data: one safe file name, distinct per uid


def _headline(m: dict, meta: dict) -> str:
    ci = m.get("accuracy_ci95")
    cal = m.get("calibration") or {}
    cons = m.get("consistency") or {}
    rows = [
        ("accuracy", f"{_pct(m.get('accuracy'))}" + (f" (95% CI {_pct(ci[0])} to {_pct(ci[1])}, Wilson)" if ci else "")
         + f" - {m.get('correct')} of {m.get('n')}"),
        ("consistency (NLVR2)", _consistency_text(cons)),
        ("majority-class baseline", f"{_pct(m['majority_baseline']['accuracy'])} (always "
                                    f"{m['majority_baseline']['majority_label']})"),
        ("share predicted True", _pct(m.get("share_pred_true"))),
        ("invalid answers", f"{m.get('invalid')} ({_pct(m.get('invalid_rate'))}); accuracy on valid "
                            f"{_pct(m.get('accuracy_valid'))}"),
        ("ECE / Brier / AUROC", " / ".join("n/a" if cal.get(k) is None else f"{cal[k]:.3f}"
                                           for k in ("ece", "brier", "auroc")) + (
            f" (from p_true, {cal.get('bins')} bins)" if cal else " (no p_true in this run)")),
    ]
    ds = m.get("dataset", {})
    info = [
        ("model", m.get("model")), ("adapter", m.get("adapter") or "none (zero-shot)"),
        ("task / template / mode", f"{m.get('task')} / {m.get('template')} / {m.get('answer_mode')}"),
        ("data read", data_line(m) + (f", limit {m['limit']}" if m.get("limit") else "")
         + (f", {m['skipped_bad_rows']} bad rows skipped" if m.get("skipped_bad_rows") else "")),
        ("pixel budget", budget_line(m)),
        ("decoding", _decoding(m)),
        ("dataset hash", ds.get("manifest_sha256") or ds.get("fingerprint") or ds.get("revision")),
        ("git", f"{meta.get('git_sha')}{' (dirty)' if meta.get('git_dirty') else ''}"),
        ("date / command", f"{meta.get('date')} - {meta.get('command')}"),
    ]
    t1 = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    t2 = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info)
    return f"<table>{t1}</table><p></p><table>{t2}</table>"


def _decoding(m: dict) -> str:
    d = m.get("decoding")
    if m.get("answer_mode") != "generate":
        return "none (score mode: one forward pass, no text generated)"
    if not d:
        return "not recorded (a run from before decoding settings were recorded)"
    shown = ", ".join(f"{k} {d[k]}" for k in ("do_sample", "num_beams", "max_new_tokens", "repetition_penalty",
                                             "eos_token_id") if k in d)
    unused = d.get("checkpoint_settings_not_used")
    return f"{d.get('source')}: {shown}" + (f"; the checkpoint's {unused} not used" if unused else "")


def _consistency_text(cons: dict) -> str:
    """The consistency headline: share, group count, and rows outside NLVR2's identifier format."""
    text = (f"{_pct(cons.get('consistency'))} of {cons.get('groups')} sentence groups all correct (a sentence with "
            f"every image pair it was shown with; mean {cons['mean_group_size'] or 0:.2f} pairs, "
            f"{cons.get('mixed_label_groups')} groups mix True and False pairs)")
    if cons["ungrouped_rows"]:
        text += (f"; {cons['ungrouped_rows']} rows have no NLVR2 identifier (split-set-pair-sentence) and count "
                 f"as one group each")
    return text


def _slice_table(m: dict, other: dict | None) -> str:
    sl, osl = m.get("slices", {}), (other or {}).get("slices", {})
    head = "<tr><th>slice</th><th>n</th><th>accuracy</th><th>95% CI</th><th>share pred True</th><th>invalid</th>"
    head += "<th>other run</th><th>change</th></tr>" if other else "</tr>"
    rows = []
    for name, s in sl.items():
        ci = s.get("ci95")
        row = (f"<tr><td>{_e(name)}</td><td class=num>{s['n']}</td><td class=num>{_pct(s['accuracy'])}</td>"
               f"<td class=num>{_pct(ci[0]) + ' - ' + _pct(ci[1]) if ci else ''}</td>"
               f"<td class=num>{_pct(s.get('share_pred_true'))}</td><td class=num>{s.get('invalid', 0)}</td>")
        if other:
            o = osl.get(name)
            if o and o.get("accuracy") is not None and s.get("accuracy") is not None:
                d = s["accuracy"] - o["accuracy"]
                cls = "good" if d > 0 else "bad" if d < 0 else ""
                row += f"<td class=num>{_pct(o['accuracy'])}</td><td class='num {cls}'>{100 * d:+.1f}</td>"
            else:
                row += "<td></td><td></td>"
        rows.append(row + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def look_inside_links(run: dict, uids: list[str], folder: Path, root=None) -> dict:
    """Per uid `(href or None, command)`: its look-inside page relative to the report folder when it exists
    (scripts/look_inside.py, or analyze.py --look_inside), and the command that makes it."""
    import os

    from evals.inside.run import command_for, options_for_eval_run, page_for

    opts = options_for_eval_run(run)
    if opts is None:
        return {}
    out = {}
    for uid in uids:
        page = page_for(opts, uid, root)
        href = os.path.relpath(page, folder).replace(os.sep, "/") if page.is_file() else None
        out[uid] = (href, command_for(opts, [uid]))
    return out


def _card(r: dict, run: dict, images, assets: _Assets, inside: tuple | None = None) -> str:
    imgs = ""
    if images is not None:
        left, right = images
        imgs = (assets.img(f"{_safe(r['uid'])}-left.png", _thumb_png(left), f"{r['uid']} left image")
                + assets.img(f"{_safe(r['uid'])}-right.png", _thumb_png(right), f"{r['uid']} right image"))
    else:
        imgs = "<p class=muted>images unavailable (see the note above the gallery)</p>"
    pred = "invalid" if not r["valid"] else str(r["prediction"])
    p = r.get("p_true")
    lines = [f"<div>{imgs}</div>", f"<p><b>{_e(r['sentence'])}</b></p>",
             f"<p>label <b>{_e(r['label'])}</b> &middot; predicted <b class=bad>{_e(pred)}</b>"
             + (f" &middot; p_true {p:.3f}" if p is not None else "") + f" &middot; <span class=muted>{_e(r['uid'])}"
             + (f" &middot; {_e(r['family'])}" if r.get("family") else "") + "</span></p>"]
    if r.get("raw_output") is not None:
        lines.append(f"<p class=muted>raw output: <code>{_e(r['raw_output'])}</code> ({_e(r.get('parse_reason'))})</p>")
    lines.append(f"<p><code>{_e(inspect_command(r['uid'], run))}</code></p>")
    if inside:
        href, command = inside
        lines.append(f"<p><a href=\"{_e(href)}\">look inside: occlusion, attention, logit lens</a></p>" if href
                     else f"<p class=muted>look inside: <code>{_e(command)}</code></p>")
    return f"<div class=card>{''.join(lines)}</div>"


def _uid_list(uids: list[str], by_uid: dict, limit: int = 200) -> str:
    items = "".join(f"<li><code>{_e(u)}</code> {_e(by_uid[u]['sentence'])} (label {_e(by_uid[u]['label'])})</li>"
                    for u in uids[:limit])
    more = f"<li class=muted>and {len(uids) - limit} more (all in comparison.json)</li>" if len(uids) > limit else ""
    return f"<ul>{items}{more}</ul>"


def render_html(run: dict, plots: str, gallery: str, comparison: str, other: dict | None) -> str:
    m = run["metrics"]
    title = f"Eval report: {run['name']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class=muted>{_e(run['dir'])} &middot; written by scripts/analyze.py; opens offline</p>
<h2>Headline</h2>
{_headline(m, run['meta'])}
<h2>Confusion and calibration</h2>
<div class=plots>{plots}</div>
{comparison}
<h2>Slices</h2>
<p class=muted>family:* = synthetic statement family; ling:* = the semantic phenomena NLVR2's paper analyses
(cardinality, quantifiers, coordination, coreference, spatial relations, comparatives, presupposition, negation),
found by word rules on the statement (scoring/slices.py): heuristic, not a parse, so expect some misses and
false hits; a statement can be in several slices. Invalid answers count as wrong.</p>
{_slice_table(m, other['metrics'] if other else None)}
<h2>Mistakes</h2>
{gallery}
</body></html>
"""


def write_report(run_dir: str | Path, compare: str | Path | None = None, out: str | Path | None = None,
                 max_mistakes: int = 24, images: bool = True, inline: bool = False, root=None) -> dict:
    """Write the report; returns `{"html", "folder", "images", "comparison", "mistakes"}`."""
    run = load_run(run_dir)
    other = load_run(compare) if compare else None
    folder = Path(out).expanduser() if out else run["dir"] / (f"report-vs-{other['name']}" if other else "report")
    # Written aside and swapped in: a folder is replaced only when it is an earlier report (never a run dir,
    # never files someone else put there), and a failed report leaves the old one as it was.
    with output_dir(folder, TOOL, recognise=_legacy_report, hint="pass another --out") as tmp:
        result = _write_report_into(tmp, run, other, max_mistakes, images, inline, root)
    folder = folder.resolve()
    result.update(html=folder / "index.html", folder=folder,
                  images=[folder / p.relative_to(tmp) for p in result["images"]])
    return result


def _legacy_report(folder: Path) -> bool:
    """A report written before reports carried a marker: analyze.py's index.html, its images, comparison.json."""
    try:
        page = (folder / "index.html").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return "written by scripts/analyze.py" in page and files_match(folder, ("index.html", "comparison.json",
                                                                             "img/*.png"))


def _write_report_into(folder: Path, run: dict, other: dict | None, max_mistakes: int, images: bool, inline: bool,
                       root) -> dict:
    assets = _Assets(folder, inline)
    m = run["metrics"]
    if "confusion" not in m:  # a metrics.json from an older writer: recompute from the predictions
        m.update(compute_metrics(run["records"]))
    if "ungrouped_rows" not in (m.get("consistency") or {}):
        # written before 2026-12-02, when consistency grouped one image pair's statements (not NLVR2's
        # metric): recompute NLVR2's from the predictions' identifiers
        m["consistency"] = consistency(run["records"])

    plots = assets.img("confusion.png", confusion_png(m["confusion"]), "confusion matrix")
    if m.get("calibration"):
        plots += assets.img("reliability.png", reliability_png(m["calibration"]), "reliability diagram")
    else:
        plots += "<p class=muted>no reliability diagram: this run has no p_true</p>"

    comparison_html, comparison = "", None
    if other:
        comparison = compare_runs(run, other)

        atomic_write_json(folder / "comparison.json", comparison)
        by_uid = {r["uid"]: r for r in run["records"]}
        t = comparison["mcnemar"]
        warn = "".join(f"<p class=warn>{_e(w)}</p>" for w in comparison["warnings"])
        comparison_html = f"""<h2>Comparison with {_e(other['name'])}</h2>{warn}
<table><tr><th></th><th>this run ({_e(run['name'])})</th><th>other run ({_e(other['name'])})</th></tr>
<tr><th>accuracy on the {comparison['shared']} shared uids</th><td class=num>{_pct(comparison['accuracy_a'])}</td>
<td class=num>{_pct(comparison['accuracy_b'])}</td></tr>
<tr><th>right only here / only there</th><td class=num>{t['a_only_correct']}</td><td class=num>{t['b_only_correct']}</td></tr>
</table>
<p>McNemar exact test on the {t['discordant']} discordant uids: p = {t['p_value']:.4g}
<span class=muted>({_e(t['test'])})</span></p>
<h3>Right here, wrong in {_e(other['name'])} ({len(comparison['right_in_a_only'])})</h3>
{_uid_list(comparison['right_in_a_only'], by_uid)}
<h3>Wrong here, right in {_e(other['name'])} ({len(comparison['right_in_b_only'])})</h3>
{_uid_list(comparison['right_in_b_only'], by_uid)}"""

    mistakes = pick_mistakes(run["records"], max_mistakes)
    found, problem = find_images(run, [r["uid"] for r in mistakes], root=root) if images else ({}, "images off (--no_images)")
    n_wrong = sum(not r["correct"] for r in run["records"])
    note = f"<p class=muted>{len(mistakes)} of {n_wrong} mistakes, most confident first.</p>"
    if problem:
        note += f"<p class=warn>images: {_e(problem)}</p>"
    inside = look_inside_links(run, [r["uid"] for r in mistakes], folder, root)
    cards = "".join(_card(r, run, found.get(r["uid"]), assets, inside.get(r["uid"])) for r in mistakes)
    gallery = note + (cards or "<p>no mistakes</p>")

    page = render_html(run, plots, gallery, comparison_html, other)
    html_path = folder / "index.html"
    html_path.write_text(page, encoding="utf-8")
    return {"html": html_path, "folder": folder, "images": assets.written, "comparison": comparison,
            "mistakes": [r["uid"] for r in mistakes], "image_problem": problem}


def referenced_files(html_text: str) -> list[str]:
    """Every src/href in the page that is not a data URI or an in-page anchor (for checks and tests)."""
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html_text) + re.findall(r"(?:src|href)\s*=\s*'([^']*)'", html_text)
    return [html.unescape(r) for r in refs if not r.startswith(("data:", "#"))]


def check_report(html_path: str | Path) -> list[str]:
    """Referenced files that do not exist next to the report ([] when the report is whole)."""
    html_path = Path(html_path)
    return [r for r in referenced_files(html_path.read_text(encoding="utf-8"))
            if re.match(r"^[a-z]+://", r) or not (html_path.parent / r).is_file()]


def print_comparison(c: dict, file=None) -> None:
    file = file or sys.stdout  # looked up per call: a default bound at import goes stale when stdout is replaced
    t = c["mcnemar"]
    print(f"compared on {c['shared']} shared uids: {c['a']} {_pct(c['accuracy_a'])} vs {c['b']} {_pct(c['accuracy_b'])}; "
          f"right only in {c['a']}: {t['a_only_correct']}, only in {c['b']}: {t['b_only_correct']}; "
          f"McNemar exact p = {t['p_value']:.4g}", file=file)
    for w in c["warnings"]:
        print(f"warning: {w}", file=file)
