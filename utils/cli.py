"""Small pieces every entry point shares: the one-line error guard, a console that cannot crash, --root."""

from __future__ import annotations

import argparse
import codecs
import copy
import difflib
import os
import sys
from typing import Callable, Iterable, Sequence

from utils.errors import VLMStudiesError, disk_full_error, failed_path, is_disk_full
from utils.io import atomic_write_text


def safe_console() -> None:
    """Let stdout/stderr print any character, whatever their encoding.

    On Windows, output redirected to a file or a pipe is encoded in the ANSI code page (cp1252 in Western
    Europe), which has no "≥", "→", Chinese or most other characters; a sentence, a path or a model's answer
    holding one would raise UnicodeEncodeError mid-run. Such characters are written escaped (`\\u2265`)
    instead. UTF-8 streams (Linux, macOS, Windows consoles, PYTHONUTF8=1) are left as they are.
    """
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        try:
            if encoding and codecs.lookup(encoding).name != "utf-8" and getattr(stream, "errors", None) == "strict":
                stream.reconfigure(errors="backslashreplace")
        except (AttributeError, LookupError, ValueError):  # not a TextIOWrapper, or already closed
            pass


def main_guard(fn: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run `fn(argv)`; a `VLMStudiesError` (or a full disk) becomes `error: <message>` on stderr and exit status 2.

    Output first goes through `safe_console`, so no character can crash a script's printing; two library messages
    that say nothing about the run are silenced (`quiet_known_warnings`). Started from a command line
    (`argv` None) with stderr going to a file or a pipe, progress bars are switched off (`no_bars_unless_tty`).
    """
    safe_console()
    quiet_known_warnings()
    if argv is None:
        no_bars_unless_tty()
    try:
        fn(argv)
    except VLMStudiesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        # A full disk in a place without its own guard: still one line (files are written atomically, so
        # what was there before is intact).
        where = failed_path(exc) or os.getcwd()
        print(f"error: {disk_full_error(where, 'run the same command again')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything already written is kept; run the same command again to continue",
              file=sys.stderr)
        return 130
    return 0


class _NoKernelsHubMessage:
    """Drops bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community: No module named
    'kernels'" (Setup/NOTES.md §3): logged at import on CPUs with avx512_bf16 when the optional `kernels` package
    (a Hub download of a faster CPU 4-bit kernel) is absent. bitsandbytes then uses its own CPU kernel, which is
    what every CPU figure here was measured with, and the Hub is offline here anyway."""

    def filter(self, record) -> bool:
        return "from kernels-community" not in record.getMessage()


def quiet_known_warnings() -> None:
    """Silence exactly two messages every train / plan / bench start printed (Setup/NOTES.md §3), nothing else:
    bitsandbytes' note about the `kernels` package (a filter on the one logger that emits it) and transformers'
    FutureWarning "`is_gradient_checkpointing` is deprecated", raised inside PEFT/TRL code we do not call
    ourselves (our options already use activation_checkpointing)."""
    import logging
    import warnings

    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _NoKernelsHubMessage) for f in log.filters):
        log.addFilter(_NoKernelsHubMessage())
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def no_bars_unless_tty() -> None:
    """tqdm bars redraw with carriage returns, which a file or a pipe keeps as one ever-growing line. When stderr
    is not a terminal, switch them off for this process and its children: tqdm's own TQDM_DISABLE (the
    Trainer's loss lines still print, one per log), and huggingface_hub's and datasets' switches for their
    download / load bars. A value already set in the environment wins."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(name, "1")


def add_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None,
                        help="artifact root (default: $VLM_STUDIES_ROOT, else Drive on Colab, else the repo's artifacts/)")


def add_data_args(parser: argparse.ArgumentParser, split: str = "validation", source: str | None = None) -> None:
    """The three flags every script that reads NLVR2 takes, with the same meaning everywhere."""
    parser.add_argument("--source", default=source,
                        help="hub id (e.g. pingzhili/nlvr2) or a local folder / parquet file in its schema "
                             "(default: the synthetic set under the root)")
    parser.add_argument("--split", default=split, help="split name: train, validation, test (default %(default)s)")
    parser.add_argument("--mode", default="streaming", choices=["streaming", "cached"],
                        help="streaming reads the source directly; cached reads manifest-checked local shards")


# --- one flag convention -------------------------------------------------------------------------------------------
# Every option is spelt with underscores (--max_pixels, as the YAML keys and the dataclass fields are); the dashed
# spelling (--max-pixels) is accepted everywhere as an alias and left out of --help to keep it short.

def canonical_flag(option: str) -> str:
    """`--max-pixels` -> `--max_pixels`; short options (`-h`) and `--x_y` stay as they are."""
    if not option.startswith("--"):
        return option
    return "--" + option[2:].replace("-", "_")


def add_dash_aliases(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every long option both spellings, the underscore one first (usage and help show it alone).

    Safe to call again after more options were added; an alias already taken by another option is left to it.
    """
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs:
            continue
        shorts = [o for o in action.option_strings if not o.startswith("--")]
        canon = list(dict.fromkeys(canonical_flag(o) for o in longs))
        dashed = list(dict.fromkeys("--" + c[2:].replace("_", "-") for c in canon))
        ordered = list(dict.fromkeys([*shorts, *canon, *longs, *dashed]))
        kept = []
        for option in ordered:
            owner = parser._option_string_actions.get(option)
            if owner is None or owner is action:
                parser._option_string_actions[option] = action
                kept.append(option)
        action.option_strings = kept
        action.hidden_aliases = tuple(o for o in kept if o.startswith("--") and o not in canon)
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs keep their line breaks (example commands stay one per line); each option is
    listed under its underscore spelling only; a fixed width, so the help reads the same in any terminal."""

    def __init__(self, prog, indent_increment=2, max_help_position=30, width=None):
        super().__init__(prog, indent_increment, max_help_position, width=100)

    def _format_action_invocation(self, action):
        hidden = getattr(action, "hidden_aliases", ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [o for o in action.option_strings if o not in hidden]
        return super()._format_action_invocation(action)


def unknown_option_message(bad: Sequence[str], known: Iterable[str]) -> str:
    """One line for flags no parser knows, naming the closest known ones."""
    known = sorted({canonical_flag(k) for k in known if k.startswith("--")})
    first = canonical_flag(bad[0].split("=", 1)[0])
    close = difflib.get_close_matches(first, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run with --help to list every option"
    return f"unknown option '{first}'" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "") + hint


class ArgumentParser(argparse.ArgumentParser):
    """argparse with this repo's conventions: underscore flags with dashed aliases (hidden from help), examples
    in the description kept as written, no abbreviations (a typo is an error, never another option), an
    unknown flag reported with the closest known ones, and every parse error on one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        add_dash_aliases(self)
        return super().parse_known_args(args, namespace)

    def format_help(self):
        add_dash_aliases(self)
        return super().format_help()

    def error(self, message):
        """One line, as every other error of the scripts (the usage is one --help away)."""
        hint = "" if "--help" in message else f"; see {self.prog} --help"
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")

    def parse_args(self, args=None, namespace=None):
        ns, rest = self.parse_known_args(args, namespace)
        if rest:
            flags = [r for r in rest if r.startswith("-")]
            if flags:
                self.error(unknown_option_message(flags, self._option_string_actions))
            self.error(f"unexpected argument(s): {' '.join(rest)}")
        return ns


def check_flags(argv: Sequence[str], known: Iterable[str]) -> None:
    """Refuse a misspelt flag from a list of the known ones, before anything heavy is imported; the message is
    the one utils.config gives for an unknown key (`unknown option 'lora_rr' in command line; did you mean
    lora_r?`)."""
    known = {canonical_flag(k) for k in known}
    bad = [canonical_flag(a.split("=", 1)[0]) for a in argv if a.startswith("--") and a != "--"]
    bad = [b[2:] for b in bad if b not in known]
    if bad:
        keys = sorted(k[2:] for k in known if k.startswith("--"))
        close = difflib.get_close_matches(bad[0], keys, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run with --help to list every option"
        raise VLMStudiesError(f"unknown option '{bad[0]}' in command line{hint}")


# --- --help and flag typos without the libraries ----------------------------------------------------------------
# train.py, evaluate.py and plan_run.py build their parsers from dataclasses that need transformers/TRL (seconds
# to import, a minute on a busy machine). Their help text and option list are stored in utils/cli_help/<script>.json
# with a fingerprint of what they were built from; while it matches, --help prints the stored text and a misspelt
# flag is refused before any library loads. A stale file is ignored (the full parser then answers, slowly), and
# tests/test_cli.py fails until it is rewritten: python -m utils.cli --write_help

HELP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cli_help")
STORED_HELP = {  # script -> (files its parser is built from, libraries whose options it lists)
    "train": (("scripts/train.py", "training/options.py", "utils/config.py", "utils/cli.py"), ("transformers", "trl")),
    "evaluate": (("scripts/evaluate.py", "evals/runner.py", "utils/config.py", "utils/cli.py"), ("transformers",)),
}


def help_fingerprint(script: str) -> str:
    import hashlib
    from importlib import metadata

    files, libraries = STORED_HELP[script]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for rel in files:
        with open(os.path.join(repo, rel), "rb") as f:
            h.update(rel.encode("utf-8") + b"\0" + f.read().replace(b"\r\n", b"\n") + b"\0")
    for lib in libraries:
        try:
            h.update(f"{lib}=={metadata.version(lib)}\0".encode("utf-8"))
        except metadata.PackageNotFoundError:
            h.update(f"{lib} missing\0".encode("utf-8"))
    h.update(f"python {sys.version_info[0]}.{sys.version_info[1]}".encode("utf-8"))  # argparse's layout
    return h.hexdigest()


def stored_help(script: str) -> dict | None:
    """utils/cli_help/<script>.json when it was built from the files and libraries in use now, else None (also
    when VLM_STUDIES_FULL_HELP=1 asks for the full parser, as bench.cli_help does to compare)."""
    import json

    if os.environ.get("VLM_STUDIES_FULL_HELP") == "1":
        return None
    path = os.path.join(HELP_DIR, f"{script}.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if data.get("fingerprint") == help_fingerprint(script) else None


def quick_check(script: str, argv: Sequence[str] | None, own_flags: Iterable[str] = ()) -> None:
    """Before a config script imports the libraries: answer --help / --help_all from the stored text, and refuse
    a flag no option has (naming the closest). `own_flags`: flags the calling script adds itself."""
    argv = list(sys.argv[1:] if argv is None else argv)
    data = stored_help(script)
    if data is None:
        return
    if "--help_all" in argv or "--help-all" in argv:
        print(data["help_all"], end="")
        raise SystemExit(0)
    if "-h" in argv or "--help" in argv:
        print(data["help"], end="")
        raise SystemExit(0)
    check_flags(argv, [*data["options"], *own_flags])


def write_stored_help(script: str) -> str:
    """Build the script's full parser (imports the libraries) and store its help and options."""
    import importlib
    import json

    parser = importlib.import_module(f"scripts.{script}").make_parser
    brief, full = parser(), parser(full=True)
    brief.prog = full.prog = f"{script}.py"
    options = sorted({o for a in full._actions for o in a.option_strings})
    data = {"fingerprint": help_fingerprint(script), "help": brief.format_help(), "help_all": full.format_help(),
            "options": options}

    path = os.path.join(HELP_DIR, f"{script}.json")
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def _main(argv=None):
    ap = ArgumentParser(prog="python -m utils.cli", description="Rewrite the stored --help of the config scripts "
                                                                "(utils/cli_help/) after their options changed.")
    ap.add_argument("--write_help", action="store_true", help="rewrite utils/cli_help/<script>.json for every script")
    args = ap.parse_args(argv)
    if args.write_help:
        for script in STORED_HELP:
            print(f"wrote {write_stored_help(script)}")


if __name__ == "__main__":
    sys.exit(main_guard(_main))
