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
from utils.cli import HelpFormatter, add_dash_aliases
from utils.io import atomic_write_text
from utils.paths import REPO_ROOT



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


def config_parser(types: Sequence[type], extra_flags=None, description: str | None = None, first: Sequence[str] = (),
                  brief: dict | None = None, full: bool = False):
    """The parser `parse_config` uses, laid out for reading: `-h`, `--config` and the options named in `first`
    (the most used) come first, then one group per dataclass. `brief` maps a dataclass to the field names its
    group shows in `--help`; its other fields still parse, are named in the epilog and described by
    `--help_all` (`full=True`). Negative flags (`--no_x`) get their own help; the dashed spellings are
    hidden aliases (utils.cli.add_dash_aliases).

    Returns `(parser, extra_dests)`: the destinations `extra_flags` added."""
    import argparse
    import textwrap

    from transformers import HfArgumentParser


    # allow_abbrev=False: a misspelt flag (--answer_mod) must be an error, not silently another option
    parser = HfArgumentParser(list(types), description=description, allow_abbrev=False,
                              formatter_class=HelpFormatter, usage="%(prog)s [--config FILE.yaml] [--option value ...]")
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file of options (relative paths: the current folder first, then the repo); "
                             "command-line flags override it")
    parser.add_argument("--help_all", action="store_true",
                        help="show every option with its help (also those --help only names)")
    extra_dests = set()
    if extra_flags is not None:
        before = {a.dest for a in parser._actions}
        extra_flags(parser)
        extra_dests = {a.dest for a in parser._actions} - before
    add_dash_aliases(parser)

    from transformers.hf_argparser import string_to_bool

    owner = {}
    for t in types:
        for f in dataclasses.fields(t):
            if f.init:
                owner.setdefault(f.name, t)
    for action in parser._actions:
        if action.type is string_to_bool:
            action.metavar = "true|false"
        elif action.choices is not None and len(" ".join(map(str, action.choices))) > 60 and action.help:
            # a long list of choices would stretch the usage line; name them after the help instead
            action.metavar = action.dest.upper()
            action.help = f"{action.help} Choices: {', '.join(map(str, action.choices))}."
        positive = action.dest
        if isinstance(action, argparse._StoreFalseAction) and action.option_strings[0] == f"--no_{positive}":
            action.help = f"the same as --{positive} false"
        if not full and brief and owner.get(action.dest) in brief and action.dest not in brief[owner[action.dest]] \
                and action.dest not in first:
            action.help = argparse.SUPPRESS

    # Regroup: -h/--help_all/--config, the script's own flags and `first`, then each dataclass's fields.
    main = parser.add_argument_group("main options")
    groups = {t: parser.add_argument_group(_group_title(t)) for t in types}
    firsts = {name: i for i, name in enumerate(first)}
    ordered = [a for a in parser._actions]
    for group in parser._action_groups:
        if group not in (main, *groups.values()):
            group._group_actions[:] = []
    lead = [a for a in ordered if a.dest in ("help", "help_all", "config") or a.dest in extra_dests]
    lead += sorted((a for a in ordered if a.dest in firsts and a not in lead), key=lambda a: firsts[a.dest])
    main._group_actions.extend(lead)
    for a in ordered:
        if a not in lead:
            groups[owner[a.dest]]._group_actions.append(a)
    parser._action_groups[:] = [main, *groups.values()]
    if brief and not full:
        named = [f"--{n}" for t, shown in brief.items() for n in _field_names(t) if n not in shown and n not in firsts]
        parser.epilog = "\n".join([
            "Named here without help (each is an option too; --help_all describes them):",
            *textwrap.wrap(" ".join(named), 100, break_on_hyphens=False)])
    return parser, extra_dests


def _group_title(t: type) -> str:
    doc = (t.__dict__.get("__doc__") or "").strip()
    if doc.startswith(f"{t.__name__}("):  # the signature dataclasses writes for a class without a docstring
        doc = ""
    return f"{t.__name__}: {doc.splitlines()[0].rstrip('.')}" if doc else t.__name__


def _field_names(t: type) -> list[str]:
    return [f.name for f in dataclasses.fields(t) if f.init]


def resolve_config_path(path: str) -> Path:
    """A --config path: absolute, or relative to the current folder, else to the repo (so the example
    commands work from any folder). A file that exists nowhere is a one-line error naming the closest configs."""

    given = Path(path).expanduser()
    if given.is_absolute() or given.is_file():
        candidates = [given]
    else:
        candidates = [given, REPO_ROOT / given]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(str(p.relative_to(REPO_ROOT).as_posix()) for folder in ("training/configs", "evals/configs")
                   for p in (REPO_ROOT / folder).rglob("*.yaml"))
    close = difflib.get_close_matches(given.as_posix(), known, n=3, cutoff=0.6) or [
        k for k in known if k.rsplit("/", 1)[-1] in difflib.get_close_matches(
            given.name, [k.rsplit("/", 1)[-1] for k in known], n=3, cutoff=0.6)]
    hint = f"closest: {', '.join(close[:3])}" if close else "see training/configs/ and evals/configs/"
    where = "" if given.is_absolute() else (f" (looked in {Path.cwd()})" if Path.cwd().resolve() == REPO_ROOT.resolve()
                                            else f" (looked in {Path.cwd()} and {REPO_ROOT})")
    raise VLMStudiesError(f"config file {path} does not exist{where}; {hint}")


def parse_config(types: Sequence[type], argv: Sequence[str] | None = None, extra_flags=None,
                 description: str | None = None, first: Sequence[str] = (), brief: dict | None = None,
                 config: str | Path | None = None, overrides: dict | None = None) -> tuple[tuple, dict, Any]:
    """Parse `--config FILE` + overrides into one instance per dataclass type.

    `extra_flags(parser)` may add non-dataclass flags (e.g. `--resume`); their values come back as
    the third element (an argparse Namespace). Returns `(instances, resolved_dict, extra_namespace)`.
    `first` and `brief` lay out --help (see `config_parser`). A caller in the library (reproduce) passes
    `config` and `overrides` (option name -> value, typed as in YAML) instead of a command line: they go
    through the same checks as a YAML file.
    """
    import argparse
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help_all" in argv or "--help-all" in argv:
        config_parser(types, extra_flags, description, first, brief, full=True)[0].print_help()
        raise SystemExit(0)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    pre_ns, rest = pre.parse_known_args(argv)
    if config is not None:
        pre_ns.config = str(config)
    config_path = str(resolve_config_path(pre_ns.config)) if pre_ns.config else None
    fields = known_fields(types)
    yaml_values = load_yaml(config_path, keep=dict_fields(types)) if config_path else {}
    _unknown(yaml_values, fields, pre_ns.config or "config")
    if overrides:
        _unknown(overrides, fields, "overrides")
        yaml_values.update(overrides)

    parser, extra_dests = config_parser(types, extra_flags, description, first, brief)
    # YAML values become the defaults, so the command line still wins.
    parser.set_defaults(**yaml_values)  # HfArgumentParser takes list/dict defaults as Python objects
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
    extra = argparse.Namespace(**{d: values[d] for d in extra_dests}, config=config_path,
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


    text = yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    atomic_write_text(path, text)
