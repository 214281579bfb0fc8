"""A synthetic NLVR2: rendered coloured shapes, statements whose labels are computed from the scenes.

Rows follow the schema of the Hub copy `pingzhili/nlvr2` (`identifier`, `sentence`, `label`,
`image0` = left, `image1` = right, images as PNG), plus `family` and `template` so analysis can
slice by them.

Structure, as in NLVR2 (Setup/NOTES.md §5): a *set* has four image pairs (eight images); each of its
sentences (`sentences_per_set`, default 2) is shown with several of those pairs (3 or 4: the first
3 or 4 of the set, as `pairs_per_sentence` draws), and each pair with every sentence that uses it.
Identifiers are NLVR2's `split-set-pair-sentence`: `dev-7-2-1` is sentence 1 of set 7 on its pair 2,
so blanking the pair field (`dev-7--1`) groups one sentence's pairs: NLVR2's consistency group.
Rows are ordered by set, then sentence, then pair, so a sentence's rows are contiguous.

Statement families
  grounding_left / grounding_right  truth depends on ONE image ("The left image contains a red
                                     shape."). A tiny model learns these in minutes, which proves
                                     both images reach the model, in order.
  count, compare, quantifier         compositional: counting, comparisons across the images,
                                     both / neither / exactly one. Beyond a tiny random model in
                                     minutes (Setup/NOTES.md §4); reported, not required.

Labels: each sentence's pairs get both labels (2 True + 2 False over four pairs; over three, 2 + 1
leaning to the label that sentence is short of in the split), in a random order over the pairs, so
labels stay balanced within every sentence (template + its slot values: the text alone never gives
the answer away, Setup/NOTES.md §4) and a model must be right on True and False pairs alike to be
consistent. Each pair's scenes are sampled until every statement shown with it has its assigned
label; a set whose statements cannot all be met (e.g. "more shapes on the left" and "the same number
of shapes" both True on one pair) is drawn again. Only a split's last set may be smaller, so the
split has exactly the rows asked for.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from utils.errors import VLMStudiesError
from utils.io import check_output_dir, files_match, install_dir, read_json_field
from utils.locks import locked
from utils.paths import subdir

GENERATOR_VERSION = "2"  # 2: NLVR2 sets (a sentence over 3-4 pairs); 1: two statements per pair
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_SHAPES = 4
SPLIT_PREFIX = {"train": "train", "validation": "dev", "test": "test1"}
PAIRS_PER_SET = 4  # NLVR2: eight photographs per set, paired four ways


Shape = tuple  # (kind, color): all a statement can talk about; geometry is drawn at render time
Scene = tuple  # tuple[Shape, ...]


@dataclass(frozen=True)
class Template:
    """A statement template: `text` with slots, the family it belongs to, and its truth function."""
    tid: str
    family: str
    text: str
    slots: dict = field(default_factory=dict)  # slot name -> tuple of values
    truth: Callable = None  # (left, right, **slots) -> bool

    def instances(self) -> list[dict]:
        out = [{}]
        for name, values in self.slots.items():
            out = [dict(d, **{name: v}) for d in out for v in values]
        return out


def _has_color(scene, color):
    return any(c == color for _, c in scene)


def _has_shape(scene, kind):
    return any(k == kind for k, _ in scene)


def _plural(n):
    return "shape" if n == 1 else "shapes"


def make_templates(grounding_colors: Iterable[str] = tuple(COLORS)) -> list[Template]:
    g = tuple(grounding_colors)
    colors, counts = tuple(COLORS), tuple(range(1, MAX_SHAPES + 1))
    return [
        Template("left_color", "grounding_left", "The left image contains a {color} shape.", {"color": g},
                 lambda l, r, color: _has_color(l, color)),
        Template("right_color", "grounding_right", "The right image contains a {color} shape.", {"color": g},
                 lambda l, r, color: _has_color(r, color)),
        Template("left_count", "count", "The left image contains exactly {n} {noun}.", {"n": counts},
                 lambda l, r, n: len(l) == n),
        Template("right_count", "count", "The right image contains exactly {n} {noun}.", {"n": counts},
                 lambda l, r, n: len(r) == n),
        Template("total_count", "count", "There are {n} shapes in total.", {"n": tuple(range(2, 2 * MAX_SHAPES + 1))},
                 lambda l, r, n: len(l) + len(r) == n),
        Template("more_left", "compare", "The left image contains more shapes than the right image.", {},
                 lambda l, r: len(l) > len(r)),
        Template("more_right", "compare", "The right image contains more shapes than the left image.", {},
                 lambda l, r: len(r) > len(l)),
        Template("same_count", "compare", "Both images contain the same number of shapes.", {},
                 lambda l, r: len(l) == len(r)),
        Template("both_shape", "quantifier", "Both images contain a {shape}.", {"shape": SHAPES},
                 lambda l, r, shape: _has_shape(l, shape) and _has_shape(r, shape)),
        Template("neither_color", "quantifier", "Neither image contains a {color} shape.", {"color": colors},
                 lambda l, r, color: not _has_color(l, color) and not _has_color(r, color)),
        Template("one_color", "quantifier", "Exactly one image contains a {color} shape.", {"color": colors},
                 lambda l, r, color: _has_color(l, color) != _has_color(r, color)),
    ]


FAMILIES = ("grounding_left", "grounding_right", "count", "compare", "quantifier")
GROUNDING_FAMILIES = ("grounding_left", "grounding_right")


def render_sentence(t: Template, slots: dict) -> str:
    extra = {"noun": _plural(slots["n"])} if "n" in slots else {}
    n = slots.get("n")
    values = dict(slots, **extra)
    if n is not None and t.tid != "total_count":
        values["n"] = NUMBER_WORDS.get(n, n)
    return t.text.format(**values)


_COLOR_NAMES = tuple(COLORS)


def sample_scene(rng: random.Random) -> Scene:
    """1..MAX_SHAPES shapes of random kind and colour (what they are; where they go is drawn later)."""
    n = rng.randint(1, MAX_SHAPES)
    return tuple((SHAPES[int(rng.random() * 3)], _COLOR_NAMES[int(rng.random() * 4)]) for _ in range(n))


def render_scene(scene: Scene, size: int, rng: random.Random) -> "Image.Image":
    """Draw the shapes on white, one per cell of a 2x2 grid so none overlap and each stays visible."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    cells = rng.sample(range(4), len(scene))
    for (kind, color), cell in zip(scene, cells):
        x = (0.25 + 0.5 * (cell % 2) + rng.uniform(-0.03, 0.03)) * size
        y = (0.25 + 0.5 * (cell // 2) + rng.uniform(-0.03, 0.03)) * size
        r = rng.uniform(0.15, 0.22) * size
        draw_shape(draw, kind, COLORS[color], x, y, r)
    return img


def draw_shape(draw, kind: str, fill, x: float, y: float, r: float) -> None:
    """A circle, square or triangle of half-size `r` centred at (x, y) (shared with the VSR fixture)."""
    if kind == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


@dataclass
class _Task:
    template: Template
    slots: dict

    @property
    def sentence(self) -> str:
        return render_sentence(self.template, self.slots)

    def holds(self, left, right) -> bool:
        return bool(self.template.truth(left, right, **self.slots))


def _group_sizes(remaining: int, planned: list[int], most: int) -> list[int]:
    """The planned pairs per sentence, or for a split's last set the rows still owed, split evenly in
    groups of at most `most`."""
    if sum(planned) <= remaining:
        return planned
    k = -(-remaining // most)
    return [remaining // k + (i < remaining % k) for i in range(k)]


def _group_labels(g: int, owed: Counter, rng: random.Random) -> list[bool]:
    """Labels for one sentence's `g` pairs: both labels when g > 1, the odd one to the label it is short of."""
    lean = rng.random() < 0.5 if owed[True] == owed[False] else owed[True] < owed[False]
    n_true = g // 2 + (g % 2 and lean)
    labels = [True] * n_true + [False] * (g - n_true)
    rng.shuffle(labels)
    return labels


def check_recipe(families: Iterable[str], grounding_colors: Iterable[str], sentences_per_set: int,
                 pairs_per_sentence: Iterable[int]) -> None:
    """A one-line error for a recipe the generator cannot follow (before anything is written)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise VLMStudiesError(f"unknown statement famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                              f"choose from {', '.join(FAMILIES)}")
    bad_colors = [c for c in grounding_colors if c not in COLORS]
    if bad_colors:
        raise VLMStudiesError(f"unknown grounding colour(s) {bad_colors}; choose from {', '.join(COLORS)}")
    pairs_per_sentence = list(pairs_per_sentence)
    if not pairs_per_sentence or any(not 1 <= int(g) <= PAIRS_PER_SET for g in pairs_per_sentence):
        raise VLMStudiesError(f"pairs_per_sentence {pairs_per_sentence}: each must be 1-{PAIRS_PER_SET} "
                              f"(a set has {PAIRS_PER_SET} image pairs), e.g. 3 4")
    if sentences_per_set < 1:
        raise VLMStudiesError(f"sentences_per_set must be at least 1 (got {sentences_per_set})")


def generate_split(split: str, n_examples: int, seed: int, families: Iterable[str] = FAMILIES,
                   sentences_per_set: int = 2, pairs_per_sentence: Iterable[int] = (3, 4), image_size: int = 56,
                   grounding_colors: Iterable[str] = tuple(COLORS)) -> Iterable[dict]:
    """Yield `n_examples` rows for `split`, lazily (images are rendered one set at a time)."""
    families, pairs_per_sentence = tuple(families), tuple(pairs_per_sentence)
    check_recipe(families, grounding_colors, sentences_per_set, pairs_per_sentence)
    templates = [t for t in make_templates(grounding_colors) if t.family in families]
    by_family = {f: [t for t in templates if t.family == f] for f in families}
    n_sentences = sum(len(t.instances()) for t in templates)
    per_set = min(sentences_per_set, n_sentences)  # a set's sentences are distinct
    rng = random.Random(f"{seed}-{split}")
    label_counts: dict[str, Counter] = defaultdict(Counter)
    prefix = SPLIT_PREFIX.get(split, split)
    produced, set_id, failures = 0, 0, 0
    while produced < n_examples:
        sizes = _group_sizes(n_examples - produced, [rng.choice(pairs_per_sentence) for _ in range(per_set)],
                             max(pairs_per_sentence))
        tasks: list[_Task] = []
        while len(tasks) < len(sizes):
            # family first, then template, then slot values: families get equal shares whatever
            # their number of sentences
            t = rng.choice(by_family[rng.choice(families)])
            task = _Task(t, rng.choice(t.instances()))
            if task.sentence not in {x.sentence for x in tasks}:
                tasks.append(task)
        labels = [_group_labels(g, label_counts[task.sentence], rng) for task, g in zip(tasks, sizes)]
        scenes = []
        for pair in range(max(sizes)):
            wanted = [(task, lab[pair]) for task, lab in zip(tasks, labels) if pair < len(lab)]
            for _attempt in range(400):
                left, right = sample_scene(rng), sample_scene(rng)
                if all(task.holds(left, right) == label for task, label in wanted):
                    scenes.append((left, right))
                    break
            else:  # contradictory or very rare statements on one pair: draw the set again (labels stay owed)
                break
        if len(scenes) < max(sizes):
            failures += 1
            if failures > 1000:  # never seen; a guard against a family list with no satisfiable mix
                raise VLMStudiesError(f"could not build a set of {families} statements after 1000 tries")
            continue
        failures = 0
        pngs = [(png_bytes(render_scene(left, image_size, rng)), png_bytes(render_scene(right, image_size, rng)))
                for left, right in scenes]
        for j, (task, lab) in enumerate(zip(tasks, labels)):
            for pair, label in enumerate(lab):
                label_counts[task.sentence][label] += 1
                yield {
                    "identifier": f"{prefix}-{set_id}-{pair}-{j}",
                    "sentence": task.sentence,
                    "label": "True" if label else "False",
                    "image0": {"bytes": pngs[pair][0], "path": f"{prefix}-{set_id}-{pair}-img0.png"},
                    "image1": {"bytes": pngs[pair][1], "path": f"{prefix}-{set_id}-{pair}-img1.png"},
                    "family": task.template.family,
                    "template": task.template.tid,
                }
        produced += sum(sizes)
        set_id += 1


def features():
    from datasets import Features, Image, Value

    return Features({"identifier": Value("string"), "sentence": Value("string"), "label": Value("string"),
                     "image0": Image(), "image1": Image(), "family": Value("string"), "template": Value("string")})


def write_synthetic_nlvr2(out: str | os.PathLike, sizes: dict[str, int], seed: int = 0,
                          families: Iterable[str] = FAMILIES, sentences_per_set: int = 2,
                          pairs_per_sentence: Iterable[int] = (3, 4), image_size: int = 56,
                          grounding_colors: Iterable[str] = tuple(COLORS), rows_per_shard: int = 2000) -> Path:
    """Write `<out>/<split>-NNNNN.parquet` per split and `<out>/synthetic_info.json`.

    Written into `<out>.partial` and renamed at the end, so an interrupted run never leaves a
    folder that looks complete.
    """
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    check_recipe(families, grounding_colors, sentences_per_set, pairs_per_sentence)
    out = Path(out)
    check_output_dir(out, "scripts/make_synthetic_nlvr2.py", _is_synthetic_set, "pick another --out")  # before work
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")  # per process: concurrent writers never share it
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    schema = features().arrow_schema
    counts = {}
    for split, n in sizes.items():
        if n <= 0:
            continue
        rows, shard, total = [], 0, 0
        fam_counts = Counter()
        for row in generate_split(split, n, seed, families, sentences_per_set, pairs_per_sentence, image_size,
                                  grounding_colors):
            rows.append(row)
            fam_counts[row["family"]] += 1
            if len(rows) == rows_per_shard:
                pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp / f"{split}-{shard:05d}.parquet")
                total, rows, shard = total + len(rows), [], shard + 1
        if rows:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp / f"{split}-{shard:05d}.parquet")
            total += len(rows)
        counts[split] = {"rows": total, "families": dict(fam_counts)}
    info = {"kind": "vlm_studies_synthetic_nlvr2", "generator_version": GENERATOR_VERSION, "seed": seed,
            "families": list(families), "sentences_per_set": sentences_per_set,
            "pairs_per_sentence": list(pairs_per_sentence), "image_size": image_size,
            "grounding_colors": list(grounding_colors), "splits": counts}
    (tmp / "synthetic_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    install_dir(tmp, out, "scripts/make_synthetic_nlvr2.py", recognise=_is_synthetic_set, hint="pick another --out")
    return out


def _is_synthetic_set(folder: Path) -> bool:
    """An earlier synthetic set (its info file says so, and it holds nothing else): the one folder it replaces."""
    return read_json_field(folder / "synthetic_info.json", "kind") == "vlm_studies_synthetic_nlvr2" and files_match(
        folder, ("*.parquet", "synthetic_info.json"))


# The recipe behind `--source synthetic`: what the main job and the tests use unless told otherwise.
DEFAULT_RECIPE = dict(sizes={"train": 2000, "validation": 400, "test": 400}, seed=0, families=FAMILIES,
                      sentences_per_set=2, pairs_per_sentence=(3, 4), image_size=56, grounding_colors=("red",))


_RECIPE_KEYS = ("families", "sentences_per_set", "pairs_per_sentence", "image_size", "grounding_colors")


def ensure_default_synthetic(root=None) -> Path:
    """The default synthetic set under `<root>/datasets/synthetic/`, generated on first use."""
    r = DEFAULT_RECIPE
    path = subdir("datasets", root) / "synthetic" / f"nlvr2-synth-v{GENERATOR_VERSION}-seed{r['seed']}"
    info = path / "synthetic_info.json"
    stored = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
    wanted = {"families": list(r["families"]), "sentences_per_set": r["sentences_per_set"],
              "pairs_per_sentence": list(r["pairs_per_sentence"]), "image_size": r["image_size"],
              "grounding_colors": list(r["grounding_colors"]), "rows": {k: v for k, v in r["sizes"].items() if v > 0}}
    have = {k: stored.get(k) for k in _RECIPE_KEYS}
    have["rows"] = {k: v["rows"] for k, v in stored.get("splits", {}).items()}
    if have == wanted:
        return path

    # Several processes (accelerate launch, parallel jobs) may ask at once on a fresh root: one builds,
    # the others wait and then find it built.
    with locked(path, timeout=600):
        stored = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
        have = {k: stored.get(k) for k in _RECIPE_KEYS}
        have["rows"] = {k: v["rows"] for k, v in stored.get("splits", {}).items()}
        if have != wanted:  # missing, or made by an older recipe: regenerate rather than reuse silently
            write_synthetic_nlvr2(path, **r)
    return path
