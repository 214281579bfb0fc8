"""Training data: NLVR2 rows -> TRL prompt/completion examples, lazily decoded, length-guarded.

Two datasets, both fed by the foundation loader (`vlm_datasets.load_nlvr2`) and both turning a row into
model input only through `vlm_datasets.prompts.build_inputs`:

  cached     a map-style `datasets.Dataset` of the kept row numbers; each row is read from its
             manifest-checked shard (a small row group) and decoded per batch (`with_transform`), so a
             large split is neither copied nor held decoded in memory. The length guard reads the cache's
             per-row records, not the images (Setup/NOTES.md §3). Random access gives epochs and exact resume.
  streaming  an `IterableDataset` read straight from the source, through a shuffle buffer that holds
             rows still encoded (a buffer of decoded NLVR2 photos would hold gigabytes). Loops over the
             source with a new shuffle per pass until `max_steps`.

The length guard: TRL's collator truncates prompt/completion data at `max_length` without a word,
cutting image tokens (Setup/NOTES.md §3). So TRL always gets `max_length=None`, and the guard measures
each example exactly (text tokens as the collator renders them + visual tokens from the image size
after the processor's resize) and skips-and-counts or refuses those over the limit, by policy.
`GuardedCollator` re-checks every collated batch, so a mismatch can never train silently.
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field

from utils.errors import VLMStudiesError
from vlm_datasets.nlvr2 import (
    BadRow,
    check_columns,
    COLUMN_ALIASES,
    load_nlvr2,
    normalise_label,
    normalise_row,
    resolve_source,
)
from vlm_datasets.prompts import build_inputs, count_visual_tokens, get_template, processor_pixel_limits
from utils.images import processor_size_problem
from vlm_datasets.cache import open_cache, prepare_split, split_rebuild_command
from vlm_datasets.records import stored_image_size


def _column(row: dict, key: str):
    for name in COLUMN_ALIASES[key]:
        if name in row:
            return row[name]
    return None


def header_size(value, dataset_dir=None) -> tuple[int, int]:
    """(width, height) from an encoded image's header (EXIF orientation applied), without decoding its pixels.

    ValueError when the image is missing or unreadable, or when Qwen2-VL's processor would refuse its
    size (`utils.images.processor_size_problem`), so such a row is bad before it reaches a batch.
    """

    size = stored_image_size(value, dataset_dir)
    problem = processor_size_problem(*size)
    if problem:
        raise ValueError(problem)
    return size


# ----------------------------------------------------------------------------- the length guard

class ChatTexts:
    """The prompt and completion texts TRL's collator renders for a prompt/completion example, made cheaply.

    TRL's vision collator renders every example through the chat template (Jinja) twice, every epoch:
    `trl.data_utils.apply_chat_template` renders the prompt, then prompt + completion, and keeps the
    common prefix. That was ~0.6 ms per example on the CPU here, ~9% of a smoke-config step. The text a
    chat template produces depends only on the messages' shape (roles, content types, image count) and
    inserts each text part verbatim, so the template is rendered once per shape with placeholder texts
    and each example's texts are spliced in. Each new shape is checked against TRL's own rendering, on
    its first example and on whitespace-padded probe texts (a template that trims or inspects its texts
    fails the check); a shape that fails, or one this class does not understand, is rendered by TRL.
    """

    _SLOT = "\x00\x01slot{}\x01\x00"  # cannot occur in a chat template's own text

    def __init__(self, processor):
        self.processor = processor
        self.shapes: dict = {}  # shape -> (prompt segments, completion segments) | None (render with TRL)

    def __call__(self, prompt: list, completion: list, images: list) -> tuple[str, str]:
        """(prompt text, completion text) exactly as TRL's collator renders them (same validation of images)."""
        from trl.data_utils import prepare_multimodal_messages

        prompt = prepare_multimodal_messages(prompt, images=images)
        completion = prepare_multimodal_messages(completion)
        p, c = self._shape(prompt), self._shape(completion)
        key = (p[0], c[0]) if p and c else None
        if key is not None and key not in self.shapes:
            self.shapes[key] = self._compile(prompt, completion)
        compiled = self.shapes.get(key) if key is not None else None
        if compiled is None:
            return self._trl(prompt, completion)
        return self._fill(compiled[0], p[1]), self._fill(compiled[1], c[1])

    def _trl(self, prompt, completion) -> tuple[str, str]:
        from trl.data_utils import apply_chat_template

        out = apply_chat_template({"prompt": prompt, "completion": completion}, self.processor)
        return out["prompt"], out["completion"]

    @staticmethod
    def _shape(messages):
        """((role, part kinds) per message, [texts in order]); None when a part is not a plain text or image."""
        shape, texts = [], []
        for m in messages:
            kinds = []
            for part in m.get("content") or []:
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str) and set(part) == {"type", "text"}:
                    texts.append(part["text"])
                elif kind == "image" and set(part) <= {"type", "image"}:
                    kind = "image+" if "image" in part else "image"
                else:
                    return None
                kinds.append(kind)
            if set(m) != {"role", "content"}:
                return None
            shape.append((m["role"], tuple(kinds)))
        return tuple(shape), texts

    def _with_texts(self, messages, texts):
        it = iter(texts)
        return [{"role": m["role"], "content": [{"type": "text", "text": next(it)} if p["type"] == "text" else p
                                               for p in m["content"]]} for m in messages]

    @staticmethod
    def _split(text: str, slots: list[str]):
        """Literal segments around `slots` (in order), or None when a slot is missing."""
        segments, rest = [], text
        for slot in slots:
            head, sep, rest = rest.partition(slot)
            if not sep:
                return None
            segments.append(head)
        segments.append(rest)
        return segments

    @staticmethod
    def _fill(segments, texts) -> str:
        out = [segments[0]]
        for text, seg in zip(texts, segments[1:]):
            out += [text, seg]
        return "".join(out)

    def _compile(self, prompt, completion):
        p_texts, c_texts = self._shape(prompt)[1], self._shape(completion)[1]
        slots = [self._SLOT.format(i) for i in range(len(p_texts) + len(c_texts))]
        p_slots, c_slots = slots[:len(p_texts)], slots[len(p_texts):]
        p_text, c_text = self._trl(self._with_texts(prompt, p_slots), self._with_texts(completion, c_slots))
        p_seg, c_seg = self._split(p_text, p_slots), self._split(c_text, c_slots)
        if p_seg is None or c_seg is None:
            return None
        # The check: this shape's real first example, and probe texts padded with whitespace and newlines.
        probes = [(p_texts, c_texts), ([f" \n {t}\n " for t in p_texts], [f"\n {t} " for t in c_texts])]
        for pt, ct in probes:
            want = self._trl(self._with_texts(prompt, pt), self._with_texts(completion, ct))
            if (self._fill(p_seg, pt), self._fill(c_seg, ct)) != want:
                return None
        return p_seg, c_seg


@dataclass
class LengthGuard:
    """Exact sequence length of an example as the collator will build it; over-long ones by policy."""

    processor: object
    template: str
    max_length: int | None
    policy: str = "skip"  # skip | error
    skipped: list = field(default_factory=list)  # (uid, length)
    visual: Counter = field(default_factory=Counter)  # visual tokens per kept example -> count
    lengths: Counter = field(default_factory=Counter)
    _text_cache: dict = field(default_factory=dict)
    _visual_cache: dict = field(default_factory=dict)

    def __post_init__(self):
        ip = self.processor.image_processor
        self.min_pixels, self.max_pixels = processor_pixel_limits(self.processor)
        self.patch_size = int(getattr(ip, "patch_size", 14))
        self.merge_size = int(getattr(ip, "merge_size", 2))
        tok = self.processor.tokenizer
        self.image_pad = getattr(self.processor, "image_token", "<|image_pad|>")
        self.image_pad_id = tok.convert_tokens_to_ids(self.image_pad)
        self.texts = ChatTexts(self.processor)

    def visual_tokens(self, size: tuple[int, int]) -> int:
        size = (int(size[0]), int(size[1]))
        if size not in self._visual_cache:  # photos repeat sizes a lot; the resize arithmetic is the same each time
            self._visual_cache[size] = count_visual_tokens(size[0], size[1], self.min_pixels, self.max_pixels,
                                                           self.patch_size, self.merge_size)
        return self._visual_cache[size]

    def text_tokens(self, sentence: str, label: bool, n_images: int = 2) -> tuple[int, int]:
        """(prompt tokens without visual tokens, completion tokens), rendered exactly as TRL's collator does."""
        key = (sentence, bool(label), n_images)
        if key not in self._text_cache:
            ex = build_inputs({"left": None, "right": None, "sentence": sentence, "label": bool(label)},
                              self.template)
            prompt_text, completion_text = self.texts(ex["prompt"], ex["completion"], ex["images"][:n_images])
            tok = self.processor.tokenizer
            prompt = tok(prompt_text, add_special_tokens=False)["input_ids"]
            if completion_text not in self._text_cache:  # two answers in all: tokenised once each
                self._text_cache[completion_text] = len(tok(completion_text, add_special_tokens=False)["input_ids"])
            n_pad = sum(1 for t in prompt if t == self.image_pad_id)
            self._text_cache[key] = (len(prompt) - n_pad, self._text_cache[completion_text])
        return self._text_cache[key]

    def prime(self, sentences, n_images: int = 2) -> None:
        """`text_tokens` of many sentences at once: one tokenizer call for all their prompts, the same counts.

        A prompt does not depend on the answer (checked on the first sentence; if it did, nothing is primed
        and `text_tokens` renders each pair itself), so each sentence is rendered and tokenised once.
        """
        todo = [s for s in dict.fromkeys(sentences)
                if (s, True, n_images) not in self._text_cache or (s, False, n_images) not in self._text_cache]
        if not todo:
            return
        tok = self.processor.tokenizer

        def render(sentence, label):
            ex = build_inputs({"left": None, "right": None, "sentence": sentence, "label": label}, self.template)
            return self.texts(ex["prompt"], ex["completion"], ex["images"][:n_images])

        (p_true, c_true), (p_false, c_false) = render(todo[0], True), render(todo[0], False)
        if p_true != p_false:
            return
        answer = {}
        for label, text in ((True, c_true), (False, c_false)):
            if text not in self._text_cache:
                self._text_cache[text] = len(tok(text, add_special_tokens=False)["input_ids"])
            answer[label] = self._text_cache[text]
        prompts = [p_true] + [render(s, True)[0] for s in todo[1:]]
        for sentence, ids in zip(todo, tok(prompts, add_special_tokens=False)["input_ids"]):
            n_prompt = len(ids) - ids.count(self.image_pad_id)
            for label in (True, False):
                self._text_cache[(sentence, label, n_images)] = (n_prompt, answer[label])

    def length(self, sentence: str, label: bool, sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """(total tokens, visual tokens) of one example."""
        prompt, completion = self.text_tokens(sentence, label, len(sizes))
        visual = sum(self.visual_tokens(s) for s in sizes)
        return prompt + visual + completion, visual

    def admit(self, uid: str, sentence: str, label: bool, sizes: list[tuple[int, int]]) -> bool:
        """True to keep the example; False when over-long under policy `skip` (counted); raises under `error`."""
        total, visual = self.length(sentence, label, sizes)
        if self.max_length is not None and total > self.max_length:
            if self.policy == "error":
                raise VLMStudiesError(
                    f"example {uid} needs {total} tokens ({visual} visual) > max_length {self.max_length}; raise "
                    f"--max_length, lower --max_pixels, or use --overlong skip (it is never truncated)")
            self.skipped.append((uid, total))
            return False
        self.visual[visual] += 1
        self.lengths[total] += 1
        return True

    def summary(self) -> dict:
        n = sum(self.visual.values())
        vis = sorted(self.visual.elements()) if n else []
        lens = sorted(self.lengths.elements()) if n else []
        return {
            "max_length": self.max_length, "policy": self.policy, "examples_kept": n,
            "examples_skipped_overlong": len(self.skipped), "skipped_uids_first": [u for u, _ in self.skipped[:20]],
            "visual_tokens_per_example": ({"min": vis[0], "mean": round(sum(vis) / n, 2), "max": vis[-1]}
                                          if n else None),
            "tokens_per_example": {"min": lens[0], "mean": round(sum(lens) / n, 2), "max": lens[-1]} if n else None,
            "min_pixels": self.min_pixels, "max_pixels": self.max_pixels,
        }

    def report(self, what: str) -> None:
        if self.skipped:
            shown = ", ".join(f"{u} ({n} tokens)" for u, n in self.skipped[:3])
            print(f"[train] skipped {len(self.skipped)} over-long example(s) of {what} (max_length "
                  f"{self.max_length}): {shown}{' ...' if len(self.skipped) > 3 else ''}", file=sys.stderr)


# ----------------------------------------------------------------------------- row -> example

def family_of(row: dict) -> str | None:
    return row.get("family")


def to_example(row: dict, split_name: str, template: str, min_pixels: int | None = None,
               max_pixels: int | None = None) -> dict:
    """Decode one raw cached row (the loader's normaliser, under the run's pixel budget) and build its TRL
    prompt/completion example."""
    ex = normalise_row(row, split_name, None, min_pixels, max_pixels)
    return build_inputs(ex, template)


class _RowsTransform:
    """`with_transform` hook: a batch of raw Arrow rows, or of row numbers into `rows` (a `CachedRows`), ->
    decoded prompt/completion examples."""

    def __init__(self, split_name: str, template: str, min_pixels: int | None = None, max_pixels: int | None = None,
                 rows=None):
        self.split_name, self.template = split_name, template
        self.min_pixels, self.max_pixels = min_pixels, max_pixels  # the processor's: large images decode small
        self.rows = rows

    def __call__(self, batch: dict) -> dict:
        if self.rows is not None:
            raw = [self.rows[int(i)] for i in batch["row"]]
        else:
            n = len(next(iter(batch.values())))
            raw = [{k: v[i] for k, v in batch.items()} for i in range(n)]
        out = {"images": [], "prompt": [], "completion": []}
        for row in raw:
            try:
                ex = to_example(row, self.split_name, self.template, self.min_pixels, self.max_pixels)
            except BadRow as exc:
                raise VLMStudiesError(f"training row {exc.uid} cannot be read ({exc.reason}); fix the source, "
                                      f"or train with --mode streaming, which skips and counts bad rows") from None
            for k in out:
                out[k].append(ex[k])
        return out


def _keep_row(row: dict, families: list[str], uid: str) -> bool:
    return _keep_family(family_of(row), families, uid)


def _keep_family(fam, families: list[str], uid: str) -> bool:
    if not families:
        return True
    if fam is None:
        raise VLMStudiesError(f"--families given but row {uid} has no 'family' column (only synthetic sets do); "
                              f"drop --families for this source")
    return fam in families


@dataclass
class TrainData:
    dataset: object  # datasets.Dataset | datasets.IterableDataset
    guard: LengthGuard
    info: dict  # the loader's description of the source (manifest hash in cached mode)
    rows: int | None  # rows kept (cached mode), None when streaming
    families: Counter = field(default_factory=Counter)
    stats: dict | None = None  # length statistics of a sample (streaming); cached mode: guard.summary()

    def length_stats(self) -> dict:
        return self.stats if self.stats is not None else self.guard.summary()


# A split smaller than this is read into memory on the old path (a cache of format < 3); a larger one is
# converted into the datasets Arrow cache (a copy of the whole split, Setup/NOTES.md §3).
_IN_MEMORY_BYTES = 512 << 20


def _scanned_rows(split):
    """(uid, family, measure) per row from a full pass over the shards: every row and both image headers read.

    `measure()` returns (sentence, label, sizes) or raises ValueError naming what is wrong with the row.
    """
    for row in split.raw_rows():
        def measure(row=row):
            sizes = [header_size(_column(row, "left")), header_size(_column(row, "right"))]
            label = normalise_label(_column(row, "label"))
            sentence = _column(row, "sentence")
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError("missing sentence")
            return sentence.strip(), label, sizes

        yield str(_column(row, "uid")), family_of(row), measure


def _recorded_rows(split, records: dict, guard: LengthGuard):
    """The same as `_scanned_rows`, from the cache's length records (`vlm_datasets.records`): no image is read."""

    check_columns(dict.fromkeys(split.cache.manifest.get("schema") or {}), split.where)  # as the first row would
    n = len(records["uid"])
    if split.limit is not None:
        n = min(n, split.limit)
    # every prompt tokenised in one call (NLVR2 train: ~25k distinct sentences; one call each cost ~0.3 ms)
    guard.prime(s.strip() for s in records["sentence"][:n] if isinstance(s, str) and s.strip())
    for i in range(n):
        def measure(i=i):
            sizes = []
            for side in ("left", "right"):
                if records[f"{side}_error"][i] is not None:
                    raise ValueError(records[f"{side}_error"][i])
                size = (records[f"{side}_w"][i], records[f"{side}_h"][i])
                problem = processor_size_problem(*size)
                if problem:
                    raise ValueError(problem)
                sizes.append(size)
            if records["label_error"][i] is not None:
                raise ValueError(records["label_error"][i])
            sentence = records["sentence"][i]
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError("missing sentence")
            return sentence.strip(), records["label"][i], sizes

        yield records["uid"][i], records["family"][i], measure


def cached_dataset(split, guard: LengthGuard, template: str, families: list[str], full_scan: bool = False) -> TrainData:
    """Map-style dataset over the cache shards, already filtered by family and length.

    With the cache's length records (format 3) nothing but the records file is read here, and the dataset
    holds only the kept row numbers: each row is read from its shard when a batch needs it, so nothing is
    copied. A cache without records (or `full_scan`, the benchmark's old-behaviour switch) is measured by a
    full pass over the shards and, when large, copied into the datasets Arrow cache (Setup/NOTES.md §3).
    """
    import datasets

    records = None if full_scan else split.cache.records()
    if records is None and not full_scan:

        print(f"[train] the cache of {split.where} predates length records (format {split.cache.format_version}): "
              f"every row is read to measure it; rebuild it once to skip this on every launch: "
              f"`{split_rebuild_command(split.source_info.source, split.split, split.root)}`", file=sys.stderr)
    facts = _recorded_rows(split, records, guard) if records is not None else _scanned_rows(split)
    keep, fam_counts, bad = [], Counter(), []
    for i, (uid, family, measure) in enumerate(facts):
        if not _keep_family(family, families, uid):
            continue
        try:
            sentence, label, sizes = measure()
        except ValueError as exc:
            if split.on_error == "raise":
                raise VLMStudiesError(f"bad training row {uid}: {exc}") from None
            bad.append((uid, str(exc)))
            continue
        if guard.admit(uid, sentence, label, sizes):
            keep.append(i)
            fam_counts[family or "all"] += 1
    if bad:
        print(f"[train] skipped {len(bad)} bad row(s): {', '.join(u for u, _ in bad[:3])}", file=sys.stderr)
    guard.report(f"{split.split}")
    if not keep:
        raise VLMStudiesError(f"no training examples left in {split.source_info.source} [{split.split}] after the "
                              f"family filter {families or '(none)'} and the length guard; check --families and "
                              f"--max_length")
    transform = _RowsTransform(split.split, template, guard.min_pixels, guard.max_pixels)
    if records is not None:
        # Row numbers only (8 bytes a row, in memory); each row is read from its shard's small row group.
        transform.rows = split.cache.rows()
        ds = datasets.Dataset.from_dict({"row": keep})
    else:
        files = [str(f) for f in split.cache.files]
        size = sum(os.path.getsize(f) for f in files)
        ds = datasets.Dataset.from_parquet(files, keep_in_memory=size < _IN_MEMORY_BYTES)
        ds = ds.select(keep)  # row order is the loader's (same files, same order), so indices line up
    ds = ds.with_transform(transform)
    return TrainData(ds, guard, split.info, len(keep), fam_counts)


def _stream(split, guard: LengthGuard, template: str, families: list[str], buffer_size: int, seed: int):
    """Endless shuffled passes over the source; rows stay encoded in the buffer, decoded when yielded.

    Deterministic in `seed` (each pass reshuffles with its own seed), so a resumed run that skips the
    batches it already trained on sees exactly the same examples afterwards.
    """
    bad = 0
    for epoch in range(1 << 30):
        rng = random.Random(f"{seed}-{epoch}")
        buffer: list = []
        produced = 0

        def emit(row):
            nonlocal bad
            uid = str(_column(row, "uid"))
            try:
                ex = split.normalise(row)
            except BadRow as exc:
                if split.on_error == "raise":
                    raise VLMStudiesError(f"bad training row {exc.uid}: {exc.reason}") from None
                bad += 1
                if bad <= 3:
                    print(f"[train] skipped bad row {exc.uid}: {exc.reason}", file=sys.stderr)
                return None
            if not guard.admit(uid, ex.sentence, ex.label, [ex.meta["left_size"], ex.meta["right_size"]]):
                uid_, n = guard.skipped[-1]
                if len(guard.skipped) <= 3:
                    print(f"[train] skipped over-long example {uid_} ({n} tokens > max_length "
                          f"{guard.max_length})", file=sys.stderr)
                return None
            return build_inputs(ex, template)

        for row in split.raw_rows():
            if not _keep_row(row, families, str(_column(row, "uid"))):
                continue
            if len(buffer) < buffer_size:
                buffer.append(row)
                continue
            j = rng.randrange(buffer_size)
            row, buffer[j] = buffer[j], row
            ex = emit(row)
            if ex is not None:
                produced += 1
                yield ex
        rng.shuffle(buffer)
        for row in buffer:
            ex = emit(row)
            if ex is not None:
                produced += 1
                yield ex
        if produced == 0:
            raise VLMStudiesError(f"no training examples in {split.source_info.source} [{split.split}] after the "
                                  f"family filter {families or '(none)'} and the length guard")


def probe(split, guard: LengthGuard, families, n: int = 256) -> dict:
    """Length statistics of the first `n` rows (image headers only), for a stream's run metadata.

    A stream is measured as it is read, possibly in a dataloader worker, so its full statistics are
    not at hand when the run starts; this sample is recorded instead.
    """
    sample = LengthGuard(guard.processor, guard.template, guard.max_length, "skip")
    seen = 0
    for row in split.raw_rows():
        uid = str(_column(row, "uid"))
        if not _keep_row(row, families, uid):
            continue
        try:
            sizes = [header_size(_column(row, "left"), split.dataset_dir),
                     header_size(_column(row, "right"), split.dataset_dir)]
            sample.admit(uid, str(_column(row, "sentence")).strip(), normalise_label(_column(row, "label")), sizes)
        except ValueError:
            continue
        seen += 1
        if seen >= n:
            break
    return {**sample.summary(), "sampled_rows": seen}


def streaming_dataset(split, guard: LengthGuard, template: str, families: list[str], buffer_size: int,
                      seed: int) -> TrainData:
    import datasets

    ds = datasets.IterableDataset.from_generator(
        _stream, gen_kwargs=dict(split=split, guard=guard, template=template, families=tuple(families),
                                 buffer_size=max(1, buffer_size), seed=seed))
    return TrainData(ds, guard, split.info, None, stats=probe(split, guard, families))


def load_train_data(data_opts, processor, max_length: int | None, seed: int, root=None,
                    full_scan: bool = False) -> TrainData:
    """The training dataset described by `data_opts` (source, split, mode, families, limit, guard policy).

    `full_scan`: measure a cached split by reading every row even when its length records exist (what every
    launch did before them; `bench.start_time` compares the two).
    """

    get_template(data_opts.template)  # unknown template: clear error before any data is read
    if data_opts.mode == "cached":
        ensure_cached(data_opts.source, data_opts.split, root)
    guard = LengthGuard(processor, data_opts.template, max_length, data_opts.overlong)
    # Decoded under the processor's own pixel limits: a very large image is decoded small, at exactly the
    # size the processor would resize it to, so the guard's visual-token counts stay exact.
    split = load_nlvr2(data_opts.source, data_opts.split, data_opts.mode, root=root, limit=data_opts.train_limit,
                       min_pixels=guard.min_pixels, max_pixels=guard.max_pixels)
    if data_opts.mode == "cached":
        return cached_dataset(split, guard, data_opts.template, data_opts.families, full_scan)
    return streaming_dataset(split, guard, data_opts.template, data_opts.families, data_opts.shuffle_buffer, seed)


def ensure_cached(source: str | None, split: str, root=None) -> None:
    """Local sources are cached on first use; a Hub source must be prepared first (it needs the network)."""

    info = resolve_source(source, split, root)
    if info.kind == "local":
        prepare_split(source, split, root, progress=False)
        return
    open_cache(info, root=root)  # raises with the prepare_data.py command to run


# ----------------------------------------------------------------------------- the collator check

class GuardedCollator:
    """TRL's vision collator, with the answer-only label mask made exact and every batch checked.

    Labels: TRL labels the whole completion as rendered by the chat template, which for Qwen2-VL is
    `True<|im_end|>\n`; the newline after the end-of-turn token is not part of the answer, so its label
    is dropped. What stays supervised is exactly the answer tokens and `<|im_end|>`.

    Speed: the chat texts are rendered by `ChatTexts` (the same strings as TRL's, without a Jinja render per
    example) and handed to TRL's collator pre-rendered.

    Checks: each row must keep all its image tokens (as many as `image_grid_thw` says its images
    produce), end its supervised span with the end-of-turn token, and fit `max_length`. None can fail
    when the length guard ran, so a failure is a bug (e.g. a processor that resizes differently than
    assumed): it stops the run instead of training on cut images or cut answers.
    """

    def __init__(self, inner, processor, max_length: int | None):
        from trl.data_utils import is_conversational
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.inner, self.max_length, self._is_conversational = inner, max_length, is_conversational
        # TRL's collator takes pre-rendered prompt/completion strings as they are; rendering them here through
        # ChatTexts gives the same strings for a fraction of the cost (see there). Other collators get the rows.
        self.texts = ChatTexts(processor) if isinstance(inner, DataCollatorForVisionLanguageModeling) else None
        tok = processor.tokenizer
        self.image_token_id = tok.convert_tokens_to_ids(getattr(processor, "image_token", "<|image_pad|>"))
        end = tok.convert_tokens_to_ids("<|im_end|>")
        self.end_of_turn_id = end if end is not None and end != tok.unk_token_id else tok.eos_token_id
        self.merge = int(getattr(processor.image_processor, "merge_size", 2))

    def __call__(self, examples):
        n_images = [len(ex["images"]) for ex in examples]
        if self.texts is not None and all(set(ex) == {"images", "prompt", "completion"} and self._is_conversational(ex)
                                          for ex in examples):
            examples = [dict(zip(("prompt", "completion"), self.texts(ex["prompt"], ex["completion"], ex["images"])),
                             images=ex["images"]) for ex in examples]
        batch = self.inner(examples)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        per_image = (batch["image_grid_thw"].prod(-1) // (self.merge ** 2)).tolist() if "image_grid_thw" in batch \
            else []
        start = 0
        for row, k in enumerate(n_images):
            want = sum(per_image[start:start + k])
            start += k
            have = int((ids[row] == self.image_token_id).sum())
            if have != want:
                raise VLMStudiesError(f"collated row {row} holds {have} image tokens, its images need {want}: the "
                                      f"sequence was cut; this is a bug in the length guard, please report it")
            supervised = (labels[row] != -100).nonzero().flatten()
            ends = supervised[ids[row, supervised] == self.end_of_turn_id]
            if len(ends) == 0:
                raise VLMStudiesError(f"collated row {row} has no supervised end-of-turn token: its answer was cut "
                                      f"or masked")
            labels[row, int(ends[0]) + 1:] = -100
            if self.max_length is not None and int(mask[row].sum()) > self.max_length:
                raise VLMStudiesError(f"collated row {row} is {int(mask[row].sum())} tokens > max_length "
                                      f"{self.max_length}; the length guard missed it, please report it")
        return batch
