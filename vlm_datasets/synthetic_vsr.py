"""A synthetic VSR: VSR-schema rows (`vlm_datasets.vsr`) over rendered shapes, so VSR runs need no download.

    write_synthetic_vsr(out, {"train": 2000, "validation": 400})   # <out>/{train,dev}.jsonl + images/
    ensure_default_synthetic_vsr(root)                              # what `--source synthetic` reads

Two coloured shapes in two cells of a 2x2 grid, a caption naming both and a spatial relation (left of,
right of, above, below); the label follows from the cells, balanced per relation.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

from utils.io import check_output_dir, files_match, install_dir, read_json_field
from utils.locks import locked
from utils.paths import subdir
from vlm_datasets.synthetic import COLORS, SHAPES, draw_shape

# The name folders written by this tool carry in their marker; kept from when it lived in vlm_datasets/vsr.py
# so that those folders are still recognised as its own.
TOOL = "vlm_datasets.vsr.write_synthetic_vsr"


SYNTH_VERSION = "2"  # 2: the relation's axis always separates the two shapes
RELATIONS = {  # relation -> truth of "A <relation> B" from the grid cells (col, row) of A and B
    "left of": lambda a, b: a[0] < b[0],
    "right of": lambda a, b: a[0] > b[0],
    "above": lambda a, b: a[1] < b[1],
    "below": lambda a, b: a[1] > b[1],
}


def _synthetic_rows(split: str, n: int, seed: int, image_size: int, relations, rng_offset: int):
    """`n` (row, image) pairs: two distinct coloured shapes in two cells of a 2x2 grid, a caption naming
    both and a relation; labels balanced per relation (the caption's text never gives the answer away)."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"vsr-{seed}-{split}")
    colors = list(COLORS)
    rows = []
    for i in range(n):
        relation = relations[i % len(relations)]
        label = (i // len(relations)) % 2 == 0
        while True:
            ca, cb = rng.sample(colors, 2)
            ka, kb = rng.choice(SHAPES), rng.choice(SHAPES)
            cell_a, cell_b = rng.sample(range(4), 2)
            pa, pb = (cell_a % 2, cell_a // 2), (cell_b % 2, cell_b // 2)
            # The axis the relation speaks of must separate the shapes (two shapes in one column are neither
            # left nor right of each other), so every caption is plainly true or plainly false.
            axis = 0 if relation in ("left of", "right of") else 1
            if pa[axis] != pb[axis] and RELATIONS[relation](pa, pb) == label:
                break
        img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for (col, row_), kind, color in ((pa, ka, ca), (pb, kb, cb)):
            x = (0.25 + 0.5 * col + rng.uniform(-0.03, 0.03)) * image_size
            y = (0.25 + 0.5 * row_ + rng.uniform(-0.03, 0.03)) * image_size
            draw_shape(draw, kind, COLORS[color], x, y, rng.uniform(0.15, 0.22) * image_size)
        name = f"{rng_offset + i:012d}.png"  # COCO-like numeric file names
        rows.append(({"image": name, "image_link": f"synthetic://{name}",
                      "caption": f"The {ca} {ka} is {relation} the {cb} {kb}.", "label": int(label),
                      "relation": relation, "subj": f"{ca} {ka}", "obj": f"{cb} {kb}", "annotator_id": 0,
                      "vote_true_validator_id": [], "vote_false_validator_id": []}, img))
    rng.shuffle(rows)
    return rows


def write_synthetic_vsr(out: str | os.PathLike, sizes: dict[str, int], seed: int = 0, image_size: int = 56,
                        relations=tuple(RELATIONS), embed: bool = False) -> Path:
    """A VSR-schema set of rendered shapes: `<out>/{train,dev,test}.jsonl` + `<out>/images/*.png`.

    With `embed`, `<out>/{split}.parquet` instead, the image bytes in an `image` column of
    `{bytes, path}` (the shape a parquet export of VSR with images has). Written to `<out>.partial`
    and renamed, so an interrupted run never leaves a folder that looks complete.
    """
    import shutil

    out = Path(out)
    check_output_dir(out, TOOL, _is_synthetic_vsr)  # before any work
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    offset, counts = 0, {}
    for split, n in sizes.items():
        rows = _synthetic_rows(split, n, seed, image_size, list(relations), offset)
        offset += n
        file_split = "dev" if split == "validation" else split
        if embed:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = []
            for row, img in rows:
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                table.append({**row, "image": {"bytes": buf.getvalue(), "path": row["image"]}})
            pq.write_table(pa.Table.from_pylist(table), tmp / f"{file_split}.parquet")
        else:
            with open(tmp / f"{file_split}.jsonl", "w", encoding="utf-8") as fh:
                for row, img in rows:
                    img.save(tmp / "images" / row["image"], format="PNG")
                    fh.write(json.dumps(row) + "\n")
        counts[split] = n
    if embed:
        (tmp / "images").rmdir()
    info = {"kind": "vlm_studies_synthetic_vsr", "version": SYNTH_VERSION, "seed": seed, "image_size": image_size,
            "relations": list(relations), "embed": embed, "rows": counts}
    (tmp / "synthetic_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    install_dir(tmp, out, TOOL, recognise=_is_synthetic_vsr)
    return out


def _is_synthetic_vsr(folder: Path) -> bool:
    """An earlier synthetic VSR set (its info file says so, and it holds nothing else): the one folder it replaces."""
    return read_json_field(folder / "synthetic_info.json", "kind") == "vlm_studies_synthetic_vsr" and files_match(
        folder, ("*.jsonl", "*.parquet", "images/*.png", "synthetic_info.json"))


# `--source synthetic` for VSR: 56 px images (4 visual tokens each at the default pixel limits).
DEFAULT_VSR_RECIPE = dict(sizes={"train": 2000, "validation": 400, "test": 400}, seed=0, image_size=56,
                          relations=tuple(RELATIONS))


def ensure_default_synthetic_vsr(root=None) -> Path:
    """The default synthetic VSR under `<root>/datasets/synthetic/`, generated on first use."""
    r = DEFAULT_VSR_RECIPE
    path = subdir("datasets", root) / "synthetic" / f"vsr-synth-v{SYNTH_VERSION}-seed{r['seed']}"
    want = {"image_size": r["image_size"], "relations": list(r["relations"]), "rows": dict(r["sizes"]), "embed": False}
    with locked(path.with_name(path.name + ".build")):  # several processes (accelerate launch) may ask at once
        info = path / "synthetic_info.json"
        stored = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
        if {k: stored.get(k) for k in want} != want:
            write_synthetic_vsr(path, **r)
    return path
