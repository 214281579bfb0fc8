"""The model playground: free-form prompts on images (files or an NLVR2 uid), with decoding knobs and a log.

`Playground` loads a model once (base or base + adapter, the same loader as training and eval)
and answers any number of prompts. Input is built by `vlm_datasets.prompts.build_inputs`, the one
prompt builder: a uid with no prompt gets exactly the evaluation prompt of `template`; a free-form
prompt gets the same message structure (the images, then the text). Image files are read and sized
by `qwen_vl_utils.process_vision_info` within the processor's pixel limits. Every answer is
appended as one JSON line to `<root>/playground/log.jsonl`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import VLMStudiesError
from utils.generation import checkpoint_config, decoding_config, describe
from utils.images import check_image_file, decode_image_bytes, processor_size_problem, sha256_hex
from utils.locks import append_jsonl
from utils.models import load_model_and_processor
from utils.paths import subdir
from utils.seed import seed_everything
from utils.threads import apply_torch_threads
from vlm_datasets import load_nlvr2
from vlm_datasets.inspect import find_samples
from vlm_datasets.prompts import PromptTemplate, build_inputs, get_template, processor_pixel_limits, render_prompt

LOG_NAME = "log.jsonl"
# The user's text as it is, after the images. Not in prompts.TEMPLATES: it is no task prompt and
# must never be picked for training or evaluation.
FREEFORM = PromptTemplate("freeform", 1, "{sentence}", description="the user's own text after the images")
LOG_FIELDS = ("time", "model", "adapter", "images", "uid", "source", "split", "prompt", "template", "knobs",
              "decoding", "pixel_budget", "response", "new_tokens", "prompt_tokens", "visual_tokens", "latency_s",
              "tokens_per_s", "first_call", "device")
SAMPLING_KNOBS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty")


@dataclass
class Knobs:
    """Decoding settings (transformers `generate` names). Sampling knobs apply only with do_sample.

    The lab builds the generation settings from these knobs alone (`utils.generation.decoding_config`):
    nothing comes from the checkpoint's generation_config.json (Qwen2-VL's samples with top_k 1 and a
    repetition penalty of 1.05, Setup/NOTES.md §2) unless `checkpoint_defaults` asks for exactly that;
    then only `max_new_tokens` and `seed` come from here.
    """

    max_new_tokens: int = field(default=64, metadata={"help": "longest answer"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy/beam search"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (with --do_sample)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (with --do_sample)"})
    top_k: int = field(default=50, metadata={"help": "sample among the k likeliest tokens (with --do_sample)"})
    num_beams: int = field(default=1, metadata={"help": "beam search width (1: greedy or sampling)"})
    repetition_penalty: float = field(default=1.0, metadata={"help": "1.0: none"})
    seed: int = field(default=0, metadata={"help": "random seed (sampling)"})
    checkpoint_defaults: bool = field(default=False, metadata={
        "help": "decode with the checkpoint's own generation_config.json (Qwen2-VL: sampling, top_k 1, "
                "repetition_penalty 1.05) instead of the lab's settings; only --max_new_tokens and --seed apply"})

    def validate(self) -> "Knobs":
        checks = [(self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
                  (self.temperature > 0, "temperature must be above 0 (use do_sample false for greedy decoding)"),
                  (0 < self.top_p <= 1, "top_p must be in (0, 1]"), (self.top_k >= 0, "top_k must be 0 or more"),
                  (self.num_beams >= 1, "num_beams must be at least 1"),
                  (self.repetition_penalty > 0, "repetition_penalty must be above 0")]
        for ok, msg in checks:
            if not ok:
                raise VLMStudiesError(f"bad decoding setting: {msg}")
        if self.checkpoint_defaults:
            defaults = Knobs.__dataclass_fields__
            changed = [k for k in SAMPLING_KNOBS if getattr(self, k) != defaults[k].default]
            if changed:
                raise VLMStudiesError(f"checkpoint_defaults decodes with the checkpoint's own settings, so "
                                      f"{', '.join(changed)} would be ignored: drop {'them' if len(changed) > 1 else 'it'} "
                                      f"or drop checkpoint_defaults")
        return self

    def generation_config(self, model, tokenizer):
        """`(GenerationConfig, source)`: the lab's settings from these knobs ("lab"), or the checkpoint's
        generation_config.json with only max_new_tokens set ("checkpoint") when `checkpoint_defaults`."""
        if self.checkpoint_defaults:
            return checkpoint_config(model, self.max_new_tokens), "checkpoint"
        return decoding_config(tokenizer, self.max_new_tokens, do_sample=self.do_sample, temperature=self.temperature,
                               top_p=self.top_p, top_k=self.top_k, num_beams=self.num_beams,
                               repetition_penalty=self.repetition_penalty), "lab"

    def set(self, key: str, value: str) -> None:
        """Set one knob from text (`:set temperature=0.7` in interactive mode)."""
        names = [f.name for f in dataclasses.fields(self)]
        if key not in names:
            import difflib

            close = difflib.get_close_matches(key, names, n=1)
            raise VLMStudiesError(f"unknown knob '{key}'{' (did you mean ' + close[0] + '?)' if close else ''}; "
                                  f"knobs: {', '.join(names)}")
        kind = type(getattr(self, key))
        try:
            if kind is bool:
                v = value.strip().lower()
                if v not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                new = v in ("true", "1", "yes", "on")
            else:
                new = kind(value)
        except ValueError:
            raise VLMStudiesError(f"{key} takes a {kind.__name__}, got '{value}'") from None
        old = getattr(self, key)
        setattr(self, key, new)
        try:
            self.validate()
        except VLMStudiesError:
            setattr(self, key, old)
            raise


@dataclass
class Subject:
    """What the model looks at: the images as given to the processor, and how to name them in the log."""

    images: list
    records: list[dict]  # per image: {path | uid+side, sha256, width, height}
    example: object = None  # the NLVR2 Example when the images come from a uid
    uid: str | None = None
    source: str | None = None
    split: str | None = None
    extra: dict = field(default_factory=dict)


class _Freeform:
    """Just enough of an Example for `build_inputs`: the images and the user's text."""

    def __init__(self, images, text):
        self.images, self.sentence = images, text


class Playground:
    """A loaded model + processor answering prompts; see the module docstring."""

    def __init__(self, model: str = "local:small", adapter: str | None = None, dtype: str = "auto",
                 load_in_4bit: bool = False, min_pixels: int | None = None, max_pixels: int | None = None,
                 template: str = "tf", root=None, log_path=None, torch_threads: int | None = None):
        self.threads = apply_torch_threads(torch_threads)  # None: the rule of utils/threads.py; logged per call
        self.model_name, self.adapter, self.root = model, adapter, root
        self.options = {"dtype": dtype, "load_in_4bit": load_in_4bit, "min_pixels": min_pixels,
                        "max_pixels": max_pixels}  # as loaded, for tools that reuse this model
        self.template = get_template(template)
        t0 = time.perf_counter()
        self.model, self.processor = load_model_and_processor(model, adapter=adapter, dtype=dtype,
                                                              load_in_4bit=load_in_4bit, min_pixels=min_pixels,
                                                              max_pixels=max_pixels, root=root)
        self.load_s = time.perf_counter() - t0
        self.log_path = Path(log_path) if log_path else subdir("playground", root) / LOG_NAME
        self._splits: dict = {}
        self._calls = 0

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ subjects
    def images_from_paths(self, paths) -> Subject:
        """Image files -> a Subject; sized by qwen_vl_utils within this processor's pixel limits."""
        from qwen_vl_utils import process_vision_info

        if not paths:
            raise VLMStudiesError("no images given; pass --image PATH (repeatable) or --uid UID")
        files = [check_image_file(p) for p in paths]
        lo, hi = processor_pixel_limits(self.processor)
        patch = int(getattr(self.processor.image_processor, "patch_size", 14) or 14)
        decoded, records = [], []
        for f in files:  # the loaders' decoder (EXIF orientation, 16-bit, alpha on white), then qwen-vl-utils' resize
            data = f.read_bytes()
            try:
                img, (w, h) = decode_image_bytes(data, min_pixels=lo, max_pixels=hi)
            except ValueError as exc:
                raise VLMStudiesError(f"{f} cannot be decoded ({exc}); give a png, jpg or webp file") from None
            problem = processor_size_problem(w, h)
            if problem:
                raise VLMStudiesError(f"{f}: {problem}; crop or pad it to a less extreme shape")
            decoded.append(img)
            records.append({"path": str(f), "sha256": sha256_hex(data), "width": w, "height": h})
        content = [{"type": "image", "image": img, "min_pixels": lo, "max_pixels": hi} for img in decoded]
        images, _ = process_vision_info([{"role": "user", "content": content}], image_patch_size=patch)
        for record, img in zip(records, images):
            record["fed_size"] = list(img.size)
        return Subject(images, records)

    def _split(self, source, split, mode):
        key = (source, split, mode)
        if key not in self._splits:
            lo, hi = processor_pixel_limits(self.processor)  # large images are decoded small, to this budget
            self._splits[key] = load_nlvr2(source, split, mode, root=self.root, quiet=True, min_pixels=lo,
                                           max_pixels=hi)
        return self._splits[key]

    def images_from_uid(self, uid: str, source: str | None = "synthetic", split: str = "validation",
                        mode: str = "streaming") -> Subject:
        """The image pair of NLVR2 example `uid` (unknown uid -> error naming the closest ones)."""
        data = self._split(source, split, mode)
        sample = find_samples(data, [uid], with_siblings=False)[0]
        ex = sample.example
        sizes = [ex.meta.get(f"{side}_size") or img.size for side, img in zip(("left", "right"), ex.images)]  # stored
        records = [{"uid": uid, "side": side, "sha256": sha256_hex(sample.raw_image(side)), "width": w, "height": h}
                   for side, (w, h) in zip(("left", "right"), sizes)]
        return Subject(list(ex.images), records, example=ex, uid=uid, source=data.source_info.source, split=split,
                       extra={"label": ex.label, "sentence": ex.sentence})

    # ------------------------------------------------------------------ answering
    def build(self, subject: Subject, prompt: str | None) -> tuple[dict, str, str]:
        """`(inputs, user_text, template_tag)`: the template prompt for a uid without `prompt`, else free-form."""
        if prompt is None or not prompt.strip():
            if subject.example is None:
                raise VLMStudiesError("no prompt given; pass --prompt TEXT (a prompt of its own is only built for "
                                      "an NLVR2 --uid)")
            inputs, template = build_inputs(subject.example, self.template, with_answer=False), self.template
        else:
            inputs, template = build_inputs(_Freeform(subject.images, prompt), FREEFORM, with_answer=False), FREEFORM
        text = "".join(c.get("text", "") for c in inputs["prompt"][0]["content"] if c.get("type") == "text")
        return inputs, text, template.tag

    def run(self, subject: Subject, prompt: str | None = None, knobs: Knobs | None = None, log: bool = True) -> dict:
        """Generate one response; returns (and, with `log`, appends) the log record."""
        import torch

        knobs = (knobs or Knobs()).validate()
        inputs, user_text, tag = self.build(subject, prompt)
        text = render_prompt(self.processor, inputs)
        enc = self.processor(text=[text], images=inputs["images"], return_tensors="pt")
        enc = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in enc.items()}
        n_prompt = int(enc["input_ids"].shape[1])
        n_visual = int((enc["input_ids"] == self.model.config.image_token_id).sum())
        gen_config, source = knobs.generation_config(self.model, self.processor.tokenizer)
        seed_everything(knobs.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=gen_config)
        latency = time.perf_counter() - t0
        new = out[0, n_prompt:]
        response = self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": self.model_name, "adapter": self.adapter,
                  "images": subject.records, "uid": subject.uid, "source": subject.source, "split": subject.split,
                  "prompt": user_text, "template": tag, "knobs": dataclasses.asdict(knobs),
                  "decoding": describe(gen_config, source),
                  "pixel_budget": dict(zip(("min_pixels", "max_pixels"), processor_pixel_limits(self.processor))),
                  "response": response,
                  "new_tokens": int(new.numel()), "prompt_tokens": n_prompt, "visual_tokens": n_visual,
                  "latency_s": round(latency, 4), "tokens_per_s": round(new.numel() / latency, 2) if latency > 0 else None,
                  # the first generate of a process pays one-off warm-up (CUDA context, kernels): its speed
                  # is no throughput figure (seen on an H100: 0.9 tokens/s first, 25-34 after)
                  "first_call": self._calls == 0, "device": str(self.device), "torch_threads": self.threads}
        self._calls += 1
        if subject.extra:
            record["example"] = subject.extra
        if log:
            append_jsonl(self.log_path, record)
        return record


def read_log(path) -> list[dict]:
    """The playground log as records (a malformed line is an error naming it)."""
    import json

    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise VLMStudiesError(f"{path} line {i} is not JSON; the log may have been edited by hand") from None
    return out


# ---------------------------------------------------------------------- interactive mode

HELP = """commands (anything else is a prompt):
  :image PATH [PATH ...]   look at these image files
  :uid UID                 look at the image pair of this NLVR2 example
  :next / :prev            cycle through the bookmarks (of the --bookmarks tag)
  :answer                  ask the evaluation prompt of the current uid (its statement + template)
  :set KEY=VALUE ...       change decoding knobs, e.g. :set do_sample=true temperature=0.7
  :knobs                   show the knobs
  :help                    this text
  :quit                    leave (so does end of input)"""


def describe_subject(subject: Subject) -> str:
    if subject.uid:
        return f"{subject.uid} ({subject.extra.get('label')}: {subject.extra.get('sentence')})"
    return ", ".join(Path(r["path"]).name for r in subject.records)


def describe_decoding(decoding: dict) -> str:
    """One phrase naming the decoding a response was made with, and whose settings those were."""
    if decoding.get("source") == "checkpoint":
        how = "sampling" if decoding.get("do_sample") else "greedy"
        knobs = ", ".join(f"{k} {decoding[k]}" for k in ("temperature", "top_p", "top_k", "repetition_penalty")
                          if decoding.get(k) is not None)
        return f"the checkpoint's generation_config.json ({how}{', ' + knobs if knobs else ''})"
    if decoding.get("do_sample"):
        return (f"lab settings (sampling, temperature {decoding.get('temperature')}, top_p {decoding.get('top_p')}, "
                f"top_k {decoding.get('top_k')}, repetition_penalty {decoding.get('repetition_penalty')})")
    beams = decoding.get("num_beams") or 1
    return (f"lab settings ({'greedy' if beams == 1 else f'beam search x{beams}'}, repetition_penalty "
            f"{decoding.get('repetition_penalty')})")


def format_record(record: dict) -> str:
    return (f"{record['response']}\n  [{record['new_tokens']} new tokens, {record['latency_s']:.2f} s, "
            f"{record['tokens_per_s']} tokens/s{' incl. warm-up' if record.get('first_call') else ''}, "
            f"{record['visual_tokens']} visual tokens; decoding: {describe_decoding(record['decoding'])}]")


class Session:
    """The state of an interactive run: the loaded playground, the current images, knobs, bookmarks."""

    def __init__(self, playground: Playground, knobs: Knobs, subject: Subject | None = None,
                 data: tuple = ("synthetic", "validation", "streaming"), bookmarks: list[str] | None = None,
                 log: bool = True, print_fn=print, commands: dict | None = None):
        self.pg, self.knobs, self.subject, self.data = playground, knobs, subject, data
        self.bookmarks, self.log, self.print = bookmarks or [], log, print_fn
        # more :commands from the caller, {name: fn(session, args)}; the first docstring line is the help text
        # (scripts/model_playground.py adds :inside this way, so this module needs nothing from evals/)
        self.commands = dict(commands or {})

    def _cycle(self, step: int) -> None:
        if not self.bookmarks:
            raise VLMStudiesError("no bookmarks to cycle through; start with --bookmarks [TAG]")
        cur = self.subject.uid if self.subject else None
        i = self.bookmarks.index(cur) + step if cur in self.bookmarks else (0 if step > 0 else -1)
        self._set_uid(self.bookmarks[i % len(self.bookmarks)])

    def _set_uid(self, uid: str) -> None:
        self.subject = self.pg.images_from_uid(uid, *self.data)
        self.print(f"now looking at {describe_subject(self.subject)}")

    def ask(self, prompt: str | None) -> dict:
        if self.subject is None:
            raise VLMStudiesError("no images yet; use :image PATH or :uid UID first")
        record = self.pg.run(self.subject, prompt, self.knobs, log=self.log)
        self.print(format_record(record))
        return record

    def handle(self, line: str) -> bool:
        """Act on one input line; False means leave."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith(":"):
            self.ask(line)
            return True
        cmd, _, rest = line[1:].partition(" ")
        args = rest.split()
        if cmd in ("q", "quit", "exit"):
            return False
        if cmd == "help":
            extra = "".join(f"\n  :{name:<23}{(fn.__doc__ or '').strip().splitlines()[0]}"
                            for name, fn in self.commands.items())
            self.print(HELP.replace("\n  :help", extra + "\n  :help", 1) if extra else HELP)
        elif cmd in self.commands:
            self.commands[cmd](self, args)
        elif cmd == "image":
            self.subject = self.pg.images_from_paths(args)
            self.print(f"now looking at {describe_subject(self.subject)}")
        elif cmd == "uid":
            if len(args) != 1:
                raise VLMStudiesError(":uid takes one uid")
            self._set_uid(args[0])
        elif cmd in ("next", "prev", "previous"):
            self._cycle(+1 if cmd == "next" else -1)
        elif cmd == "answer":
            self.ask(None)
        elif cmd == "set":
            for item in args:
                key, eq, value = item.partition("=")
                if not eq:
                    raise VLMStudiesError(f":set takes KEY=VALUE pairs, got '{item}'")
                self.knobs.set(key.strip(), value.strip())
            self.print(f"knobs: {dataclasses.asdict(self.knobs)}")
        elif cmd == "knobs":
            self.print(f"knobs: {dataclasses.asdict(self.knobs)}")
        else:
            raise VLMStudiesError(f"unknown command ':{cmd}'; :help lists them")
        return True

    def loop(self, stream, prompt_marker: str = "") -> None:
        """Read lines from `stream` until :quit or end of input; errors are printed, not fatal."""
        import sys

        while True:
            if prompt_marker:
                sys.stdout.write(prompt_marker)
                sys.stdout.flush()
            line = stream.readline()
            if not line:
                return
            try:
                if not self.handle(line):
                    return
            except VLMStudiesError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
