"""The task registry: what is evaluated, as data rather than code paths.

A task says how a dataset row becomes model input and a gold answer, and how a response is
scored. Its `version` is bumped whenever either changes, and every prediction records
`task@version` next to the prompt template's `name@version`, so numbers from different
definitions are never mixed silently.

Adding a task is one small file in this package that calls `register(Task(...))`; every module
here is imported when the registry is first used. `nlvr2` (nlvr2.py) is the first entry; the
synthetic set's statement families are tasks of their own (nlvr2_synth.py).

Training reads the same registry: `--dataset NAME` is the task named after a row format (`nlvr2`,
`vsr`; `training_task`); its loader gives the before/after accuracy examples, and its format picks
the training-data builder. A task on an existing format needs nothing else in training.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from utils.errors import VLMStudiesError
from vlm_datasets import load_nlvr2
from vlm_datasets.prompts import build_inputs, LAB_MAX_PIXELS, LAB_MIN_PIXELS
from scoring.parser import parse_answer
from scoring.slices import default_slices


def _nlvr2_rows(source, split, mode, root=None, limit=None, on_error="skip", min_pixels=None, max_pixels=None):
    return load_nlvr2(source, split, mode, root=root, limit=limit, on_error=on_error, min_pixels=min_pixels,
                      max_pixels=max_pixels)


@dataclass(frozen=True)
class Task:
    """One evaluation task.

    `keep(example)` filters the split (e.g. one statement family); `to_inputs(example, template)`
    is the prompt + images (always `vlm_datasets.prompts.build_inputs`, the one prompt builder);
    `gold(example)` the correct answer; `parse(text)` turns a generated response into an
    `scoring.parser.ParsedAnswer` (True/False, or invalid; default `parse_answer`); `slices(example)`
    names the groups the example is reported in (default `scoring.slices.default_slices`).
    `min_pixels` / `max_pixels` are the task's pixel budget when a run sets none (the lab default,
    `vlm_datasets.prompts.LAB_MAX_PIXELS` = 512*28*28, for every registered task). `dataset` is the row
    format `load_rows` reads (nlvr2: a statement about two images; vsr: a caption about one image).
    """

    name: str
    version: int
    description: str
    default_source: str
    default_split: str = "validation"
    keep: Callable | None = None
    gold: Callable = lambda ex: bool(ex.label)
    to_inputs: Callable = lambda ex, template: build_inputs(ex, template, with_answer=False)
    parse: Callable | None = None
    slices: Callable | None = None
    load_rows: Callable = _nlvr2_rows
    dataset: str = "nlvr2"
    notes: dict = field(default_factory=dict)
    min_pixels: int = LAB_MIN_PIXELS
    max_pixels: int = LAB_MAX_PIXELS

    @property
    def tag(self) -> str:
        return f"{self.name}@v{self.version}"

    def load(self, source: str | None, split: str | None, mode: str, root=None, limit: int | None = None,
             on_error: str = "skip", min_pixels: int | None = None, max_pixels: int | None = None
             ) -> tuple[object, Iterable]:
        """`(split_object, examples)`: the loader (for `.info`, `.bad_rows`) and the task's examples.

        With a filter, `limit` counts kept examples, so `--limit 50` always means 50 of this task.
        `min_pixels` / `max_pixels`: the run's pixel budget, for decoding very large images small.
        """
        data = self.load_rows(source or self.default_source, split or self.default_split, mode, root=root,
                              limit=None if self.keep else limit, on_error=on_error, min_pixels=min_pixels,
                              max_pixels=max_pixels)
        if self.keep is None:
            return data, data
        return data, _Filtered(data, self.keep, limit)

    def parse_response(self, text: str):

        return (self.parse or parse_answer)(text)

    def slices_of(self, example) -> list[str]:

        return (self.slices or default_slices)(example)


@dataclass(frozen=True)
class DataChoice:
    """The dataset an eval reads, and why (printed before the run, so nothing is relabelled silently)."""

    source: str
    split: str
    note: str | None = None  # a line saying which dataset was chosen over which, when that needs saying


def choose_data(task: Task, source: str | None, split: str | None, given: frozenset = frozenset()) -> DataChoice:
    """What you typed is what you get: the dataset of an eval run.

    `given` names the options typed on the command line (`utils.config.parse_config`'s `cli_keys`). A task
    given there brings its own dataset (`task.default_source` / `default_split`) unless `--source` (and
    `--split`) are given there too: a config's source was chosen for the config's task, not for another. A
    source other than the task's own is used as asked and said so (e.g. `--task nlvr2 --source synthetic`
    evaluates NLVR2's prompt and scoring on the synthetic rows, and the run records source=synthetic).
    """
    if "task" in given and "source" not in given:
        ignored = {k: v for k, v in (("source", source), ("split", split))
                   if v is not None and k not in given and v != getattr(task, f"default_{k}")}
        src, spl = task.default_source, (split if "split" in given else None) or task.default_split
        note = None
        if ignored:
            note = (f"--task {task.name} brings its own dataset {src} [{spl}]; the config's "
                    + " and ".join(f"{k} '{v}'" for k, v in ignored.items())
                    + f" {'is' if len(ignored) == 1 else 'are'} not used (add "
                    + " ".join(f"--{k} {v}" for k, v in ignored.items()) + f" to evaluate {task.name} on it)")
        return DataChoice(src, spl, note)
    src, spl = source or task.default_source, split or task.default_split
    note = None
    if src != task.default_source:
        where = "the command line" if "source" in given else "the config"
        note = (f"task {task.name} reads source {src} [{spl}] as {where} asks, not its own dataset "
                f"{task.default_source}; the run records source={src}")
    return DataChoice(src, spl, note)


class _Filtered:
    """Re-iterable view of a split keeping only the examples a task selects (first `limit` of them).

    Counts what the last pass read and kept; a filter with a `field` attribute (the meta key it looks
    at) also gets the values of the rows it removed counted, so "no examples" can say why.
    """

    def __init__(self, data, keep, limit):
        self.data, self.keep, self.limit = data, keep, limit
        self.read, self.kept, self.removed = 0, 0, Counter()

    def __iter__(self) -> Iterator:
        self.read, self.kept, self.removed = 0, 0, Counter()
        field = getattr(self.keep, "field", None)
        if self.limit == 0:
            return
        for ex in self.data:
            self.read += 1
            if self.keep(ex):
                self.kept += 1
                yield ex
                if self.limit is not None and self.kept >= self.limit:
                    return
            elif field:
                self.removed[(ex.meta or {}).get(field)] += 1


def no_examples_reason(task: Task, data, examples) -> str:
    """Why a task found no examples: bad rows, an empty split, or its filter (naming what it removed).

    `examples`: what counted the pass (`_Filtered`, or `evals.feed.Feed`): `read` rows, `removed` per value."""
    bad = len(getattr(data, "bad_rows", None) or [])
    bad_text = f"{bad} row(s) were bad and skipped" if bad else ""
    if task.keep is None:
        return f"all {bad} rows were bad and skipped" if bad else "the split is empty"
    field, wanted = getattr(task.keep, "field", None), getattr(task.keep, "wanted", None)
    rule = f"keeps rows whose {field} is {' or '.join(wanted)}" if field and wanted else "keeps only some rows"
    text = f"the task {rule}, which removed all {examples.read} rows read"
    if field and examples.removed:
        seen = ", ".join(f"{v if v is not None else 'none'}: {n}" for v, n in examples.removed.most_common(5))
        text += f" ({field} {seen})"
    if bad_text:
        text += f"; {bad_text}"
    if field and examples.read and set(examples.removed) == {None}:
        text += f"; this source has no {field} column: use a task without that filter (e.g. nlvr2), or a source " \
                f"that has it (e.g. --source synthetic)"
    return text


_REGISTRY: dict[str, Task] = {}
_LOADED = False


def register(task: Task) -> Task:
    if task.name in _REGISTRY and _REGISTRY[task.name] != task:
        raise ValueError(f"task '{task.name}' is registered twice")
    _REGISTRY[task.name] = task
    return task


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")


def list_tasks() -> dict[str, Task]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_task(name: str) -> Task:
    """The registered task called `name` (a trailing `@vN` must match its current version)."""
    _load_all()
    base, _, want = name.partition("@v")
    if base not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(base, _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise VLMStudiesError(f"unknown task '{name}'; {hint}registered tasks: {', '.join(sorted(_REGISTRY))}")
    task = _REGISTRY[base]
    if want and want != str(task.version):
        raise VLMStudiesError(f"task {base} is at version {task.version}, not {want}; its prompt or scoring changed "
                              f"since, so results would not be comparable: drop '@v{want}' to use the current one")
    return task


def training_task(dataset: str) -> Task:
    """The task a training run with `--dataset dataset` reads: the one named after that row format."""
    trainable = sorted(t.name for t in list_tasks().values() if t.name == t.dataset and t.keep is None)
    if dataset not in trainable:
        raise VLMStudiesError(f"unknown dataset '{dataset}'; choose {' or '.join(trainable)} (the tasks of "
                              f"scoring/tasks/ named after their row format)")
    return get_task(dataset)
