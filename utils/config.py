"""Options as dataclasses, read from a YAML file and overridden on the command line.

    opts, resolved = parse_config((ModelArgs, DataArgs, SFTConfig), argv)

`--config FILE.yaml` supplies values; any `--key value` on the command line overrides them (every
field of every dataclass is a flag; booleans take `true`/`false`). A key that no dataclass has, in
the YAML or on the command line, is an error naming the closest known keys. The YAML may group keys
in sections (`lora: {r: 16}`); sections are flattened, and a key may be written `lora.r` too.
`resolved` is the flat dict of every option actually used, for saving beside the run. The third value
also says where each came from: `cli_keys` (typed on the command line) and `yaml_keys` (from the file).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any, Sequence

from utils.errors import VLMStudiesError

RESERVED = ("config",)


def _flatten(d: dict, prefix: str = "", keep: frozenset = frozenset()) -> dict:
    out = {}
    for k, v in (d or {}).items():
        # An option whose value is itself a mapping (TrainingArguments' accelerator_config, as a saved
        # config.yaml holds it) stays a value; any other mapping is a section.
        if isinstance(v, dict) and not k.endswith("_kwargs") and k not in ("env",) and k not in keep:
            out.update(_flatten(v, "", keep))  # sections are for readability; keys are unique across them
        else:
            out[k.split(".")[-1]] = v
    return out


def read_yaml_mapping(path: str | Path, what: str = "config file",
                      examples: str = "training/configs/ and evals/configs/") -> dict:
    """A YAML file that must hold a mapping; missing file, bad YAML (with its line) or a non-mapping is a
    one-line error naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise VLMStudiesError(f"{what} {path} does not exist; see {examples} for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise VLMStudiesError(f"{what} {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise VLMStudiesError(f"{what} {path} must be a mapping of key: value, not {type(data).__name__}")
    return data


def load_yaml(path: str | Path, keep=()) -> dict:
    return _flatten(read_yaml_mapping(path), keep=frozenset(keep))


def known_fields(types: Sequence[type]) -> dict[str, type]:
    out = {}
    for t in types:
        for f in dataclasses.fields(t):
            if f.init:
                out.setdefault(f.name, t)
    return out


def _unknown(keys, fields, where: str):
    for k in keys:
        if k not in fields:
            close = difflib.get_close_matches(k, list(fields), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; run with --help to list every option"
            raise VLMStudiesError(f"unknown option '{k}' in {where}{hint}")


def dict_fields(types: Sequence[type]) -> set[str]:
    """Options whose value may be a mapping (so a YAML mapping under that key is a value, not a section).

    Read from the class annotations: HfArgumentParser rewrites `Field.type` in place (`dict | str | None`
    becomes `str`), so after a first parse in the process the fields no longer say "dict".
    """
    import typing

    out = set()
    for t in types:
        try:
            hints = {k: str(v) for k, v in typing.get_type_hints(t).items()}
        except Exception:  # an annotation that cannot be resolved: fall back on the raw strings
            hints = {}
            for klass in reversed(t.__mro__):
                hints.update({k: str(v) for k, v in getattr(klass, "__annotations__", {}).items()})
        out |= {f.name for f in dataclasses.fields(t) if f.init and "dict" in hints.get(f.name, str(f.type)).lower()}
    return out


def parse_config(types: Sequence[type], argv: Sequence[str] | None = None, extra_flags=None,
                 description: str | None = None) -> tuple[tuple, dict, Any]:
    """Parse `--config FILE` + overrides into one instance per dataclass type.

    `extra_flags(parser)` may add non-dataclass flags (e.g. `--resume`); their values come back as
    the third element (an argparse Namespace). Returns `(instances, resolved_dict, extra_namespace)`.
    """
    import argparse
    import sys

    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    pre_ns, rest = pre.parse_known_args(argv)
    fields = known_fields(types)
    yaml_values = load_yaml(pre_ns.config, keep=dict_fields(types)) if pre_ns.config else {}
    _unknown(yaml_values, fields, pre_ns.config or "config")

    # allow_abbrev=False: a misspelt flag (--answer_mod) must be an error, not silently another option
    parser = HfArgumentParser(list(types), description=description, allow_abbrev=False)
    parser.add_argument("--config", default=None, help="YAML file of options; command-line flags override it")
    extra_dests = set()
    if extra_flags is not None:
        before = {a.dest for a in parser._actions}
        extra_flags(parser)
        extra_dests = {a.dest for a in parser._actions} - before
    # YAML values become the defaults, so the command line still wins.
    parser.set_defaults(**{k: _yaml_to_arg(v) for k, v in yaml_values.items()})
    for action in parser._actions:  # a value given in YAML satisfies a required option
        if action.dest in yaml_values:
            action.required = False
    ns, leftovers = parser.parse_known_args(rest)
    if leftovers:
        flags = [x.lstrip("-").split("=")[0].replace("-", "_") for x in leftovers if x.startswith("--")]
        if flags:
            _unknown(flags, {**fields, **{d: None for d in extra_dests}}, "command line")
        raise VLMStudiesError(f"unexpected command-line argument(s): {' '.join(leftovers)}")
    values = vars(ns)
    instances = []
    for t in types:
        names = {f.name for f in dataclasses.fields(t) if f.init}
        kwargs = {k: v for k, v in values.items() if k in names}
        try:
            instances.append(t(**kwargs))
        except (ValueError, TypeError) as exc:
            raise VLMStudiesError(f"invalid options for {t.__name__}: {str(exc).splitlines()[0]}") from None
    resolved = {}
    for inst in instances:
        for f in dataclasses.fields(inst):
            if f.init and f.name not in resolved:
                resolved[f.name] = _plain(getattr(inst, f.name))
    extra = argparse.Namespace(**{d: values[d] for d in extra_dests}, config=pre_ns.config,
                               cli_keys=_typed(parser, rest), yaml_keys=frozenset(yaml_values))
    return tuple(instances), resolved, extra


def _typed(parser, args: Sequence[str]) -> frozenset:
    """Destinations of the options typed on the command line (`--lora_r 8`, `--lora-r=8`, `--no_x`), so a
    caller can tell them from values that came from the YAML or a default."""
    typed = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in args):
                typed.add(action.dest)
    return frozenset(typed)


def _yaml_to_arg(v):
    # HfArgumentParser's list/dict fields accept Python objects as defaults; keep them as they are.
    return v


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    if dataclasses.is_dataclass(v):
        return {k: _plain(x) for k, x in dataclasses.asdict(v).items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if hasattr(v, "value") and type(v).__module__ != "builtins":  # enums
        return v.value
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def save_resolved(resolved: dict, path: str | Path, header: str | None = None) -> None:
    """Write the resolved options as YAML (atomically), optionally headed by a comment."""
    import yaml

    from utils.io import atomic_write_text

    text = yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    atomic_write_text(path, text)
