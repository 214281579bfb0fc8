"""The eval fed in parallel: a split's rows read, filtered, decoded and encoded in DataLoader workers.

Decoding a photo pair and running the processor on it costs tens of milliseconds of CPU per example
(README, eval speed); done in the eval's own process it stalls the model between batches. Here
`num_workers` DataLoader workers do it ahead of the model (prefetch about one batch), and the main
process only pads the examples of a batch together and runs the model.

Order: worker k of W takes raw rows k, k+W, k+2W, ... and yields exactly one item per row (an example,
a bad row, or a row the task's filter removed). The DataLoader hands items back in the order it asked
for them, round robin over the workers, so the main process sees them in raw-row order, forms the
batches from the good kept examples as an in-process run does (`scoring.modes.batched` over the example
stream), and collects the bad rows in order. So batches, padding, resuming and the bad rows named
(`split.bad_rows`, the printed summary, `on_error="raise"`) are those of an in-process run, and
`num_workers=0` runs the very same code in this process.

Filters before decoding: a task filter with a `keep_row(column)` method (the synthetic families,
`scoring.tasks.nlvr2_synth`) is tested on the raw row; a row it removes is never decoded (nor reported
when its image is corrupt: it is not part of the eval). A filter without one is applied after decoding.

What the workers encode: each kept example's prompt, one example at a time (`encode_prompts` on a
batch of one); `scoring.modes.collate_encoded` pads them into the batch `encode_prompts` would have
made, tensor for tensor (tests/test_eval_feed.py). Examples already predicted (a resumed run) and, in a
sharded run, all examples are only decoded there: the main process encodes the batches it computes.

Not part of the eval identity: any number of workers gives the same tensors, so the same predictions
(tested); `FEED_VERSION` and the worker count are recorded per session in run_meta.json.
Each worker reads the split's raw rows itself and skips the rows of the others: reading is cheap next to
decoding for local and cached sources, but a streamed Hub split is downloaded once per worker.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

from torch.utils.data import IterableDataset

from utils.errors import VLMStudiesError
from scoring.modes import collate_encoded, encode_prompts
from scoring.tasks import get_task
from utils.run_meta import load_average_1m
from utils.threads import usable_cores
from vlm_datasets.nlvr2 import BadRow, bad_row_error, report_bad_rows
from vlm_datasets.prompts import get_template

# How examples reach the model, recorded per session in run_meta.json. Version 1 gives the very tensors of the
# processor's batched call the eval made before (tests/test_eval_feed.py), so it is not part of the eval identity;
# a version whose tensors could differ must bump this and enter `evals.runner.eval_identity`.
FEED_VERSION = 1


def default_num_workers(load: float | None = None, accelerator: bool | None = None) -> int:
    """2 workers when the model runs on an accelerator and at least 2 of this process's cores are free by the
    1-minute load (rounded), else 0 (in-process). Workers are for a model that holds no CPU while it computes:
    on the CPU the model needs the same cores, and on this lab's 2-core machine, idle, 2 workers fed photo
    pairs at 0.90x the in-process feed (1.03x with a consumer that holds no CPU; Setup/NOTES.md §9).
    `load`: the 1-minute load (default: measured); `accelerator`: default, whether CUDA is available."""

    if accelerator is None:
        import torch

        accelerator = torch.cuda.is_available()
    if not accelerator:
        return 0
    load = load_average_1m() if load is None else load
    free = usable_cores() - (int(load + 0.5) if load is not None else 0)
    return 2 if free >= 2 else 0


@dataclass
class FeedItem:
    """One raw row's fate: `ok` (an example, with its encoded prompt or None), `bad`, `removed` or `error`."""

    kind: str
    example: Any = None
    enc: dict | None = None
    uid: str | None = None
    reason: str | None = None
    value: Any = None  # a removed row's value of the filter's field


def _strip_images(example):
    """The encoded prompt holds the pixels; the decoded images need not travel back to the main process."""
    for name in ("left", "right", "image"):
        if hasattr(example, name):
            setattr(example, name, None)
    return example


def _as_is(item):
    return item


class RowFeed(IterableDataset):
    """The worker side: one `FeedItem` per raw row of its share (worker k of W: rows k, k+W, ...).

    Holds only picklable things (the split, names, the processor), so spawned workers can unpickle it.
    """

    def __init__(self, data, task_name: str, template_name: str, processor, encode: bool = True,
                 skip_encode: frozenset = frozenset()):
        self.data, self.task_name, self.template_name = data, task_name, template_name
        self.processor, self.encode, self.skip_encode = processor, encode, frozenset(skip_encode)

    def __iter__(self) -> Iterator[FeedItem]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        share, count = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is None:
            yield from self._items(share, count)
            return
        try:
            yield from self._items(share, count)
        except VLMStudiesError as exc:  # one line in the main process, not a worker traceback
            yield FeedItem("error", reason=str(exc))

    def _items(self, share: int, count: int) -> Iterator[FeedItem]:

        task, template, data = get_task(self.task_name), get_template(self.template_name), self.data
        keep_row = getattr(task.keep, "keep_row", None)
        field = getattr(task.keep, "field", None)
        for i, item in enumerate(data.raw_items()):
            if i % count != share:
                continue
            if keep_row is not None and not keep_row(lambda name, item=item: data.item_column(item, name)):
                yield FeedItem("removed", value=data.item_column(item, field) if field else None)
                continue
            try:
                ex = data.normalise_item(item)
            except BadRow as exc:
                yield FeedItem("bad", uid=exc.uid, reason=exc.reason)
                continue
            if task.keep is not None and keep_row is None and not task.keep(ex):
                yield FeedItem("removed", value=(ex.meta or {}).get(field) if field else None)
                continue
            enc = None
            if self.encode and ex.uid not in self.skip_encode:
                enc = dict(encode_prompts(self.processor, [ex], template, task.to_inputs))
                _strip_images(ex)
            yield FeedItem("ok", example=ex, enc=enc)


class Feed:
    """The main-process side: the task's examples in order, with their encoded prompts, batch by batch.

    `read` / `kept` / `removed` count the last pass like `scoring.tasks._Filtered` (for "no examples" reasons);
    the split's `bad_rows` get the bad rows of the pass, in row order.
    """

    def __init__(self, data, task, template, processor, *, num_workers: int = 0, limit: int | None = None,
                 encode: bool = True, skip_encode=frozenset(), batch_size: int = 8):
        self.data, self.task, self.template, self.processor = data, task, template, processor
        self.num_workers, self.limit, self.batch_size = num_workers, limit, batch_size
        self.rows = RowFeed(data, task.name, template.name, processor, encode=encode, skip_encode=skip_encode)
        self.read, self.kept, self.removed = 0, 0, Counter()

    def _items(self) -> Iterator[FeedItem]:
        if self.num_workers == 0:
            yield from self.rows
            return
        from torch.utils.data import DataLoader

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer runs in the workers
        prefetch = -(-self.batch_size // self.num_workers) + 1  # about one batch ahead of the model
        loader = DataLoader(self.rows, batch_size=None, num_workers=self.num_workers,
                            collate_fn=_as_is, prefetch_factor=prefetch)
        yield from loader

    def examples(self) -> Iterator[tuple[Any, dict | None]]:
        """`(example, encoded prompt or None)` for every example of the task, in order (first `limit`)."""

        data = self.data
        data.bad_rows = bad = []
        self.read, self.kept, self.removed = 0, 0, Counter()
        normalised = 0
        if self.limit == 0:
            return
        for item in self._items():
            if item.kind == "error":
                raise VLMStudiesError(item.reason)
            if item.kind == "removed":
                self.read += 1
                self.removed[item.value] += 1
                continue
            normalised += 1
            if item.kind == "bad":
                if data.on_error == "raise":
                    raise bad_row_error(data.where, BadRow(item.uid, item.reason))
                bad.append((item.uid, item.reason))
                continue
            self.read += 1
            self.kept += 1
            yield item.example, item.enc
            if self.limit is not None and self.kept >= self.limit:
                break
        if not getattr(data, "quiet", False):
            report_bad_rows(bad, normalised, data.where)

    def batches(self) -> Iterator[list[tuple[Any, dict | None]]]:
        batch = []
        for pair in self.examples():
            batch.append(pair)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def batch_inputs(processor, task, template, batch: list[tuple[Any, dict | None]]) -> dict:
    """The model inputs of one batch: the workers' encoded prompts, the missing ones encoded here, padded."""

    return collate_encoded(processor, [enc if enc is not None else dict(encode_prompts(processor, [ex], template,
                                                                                       task.to_inputs))
                                       for ex, enc in batch])
