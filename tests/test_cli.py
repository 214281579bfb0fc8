"""The command lines: one flag convention (underscores; the dashed spelling a hidden alias) in every script and
bench entry point, --help without the heavy libraries, a misspelt flag refused before they load, help for every
option, and every command line the README and the scripts' docstrings show parses with its script's parser."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from utils.cli import STORED_HELP, ArgumentParser, check_flags, stored_help
from utils.errors import VLMStudiesError
from utils.paths import REPO_ROOT

SCRIPTS = sorted(p.stem for p in (REPO_ROOT / "scripts").glob("*.py") if p.stem != "__init__")
BENCH = sorted(p.stem for p in (REPO_ROOT / "bench").glob("*.py")
               if p.stem != "__init__" and "def main(" in p.read_text(encoding="utf-8"))
CONFIG_SCRIPTS = ("train", "evaluate", "plan_run")  # parsers built from dataclasses (TRL / transformers)
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")

# Runs a script or module as `python ...` would, then reports which heavy libraries it imported.
RUNNER = """
import json, runpy, sys
target, args = sys.argv[1], sys.argv[2:]
sys.argv = [target, *args]
code = 0
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
sys.stdout.flush()
print("\\nIMPORTED " + json.dumps([m for m in %r if m in sys.modules]), file=sys.stderr)
sys.exit(code)
""" % (HEAVY,)


def _run(target: str, *args: str) -> tuple[int, str, str, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", COLUMNS="100")
    proc = subprocess.run([sys.executable, "-c", RUNNER, target, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", env=env, timeout=300)
    imported = json.loads(proc.stderr.rsplit("IMPORTED ", 1)[1])
    return proc.returncode, proc.stdout, proc.stderr.rsplit("IMPORTED ", 1)[0], imported


def _light_parser(name: str, package: str = "scripts") -> argparse.ArgumentParser:
    return importlib.import_module(f"{package}.{name}").make_parser()


ENTRY_POINTS = [(f"scripts/{s}.py", s) for s in SCRIPTS] + [(f"bench.{b}", b) for b in BENCH]


@pytest.mark.parametrize("target", [t for t, _ in ENTRY_POINTS])
def test_help_loads_no_heavy_library(target):
    """--help of every entry point is answered before torch/transformers/TRL/PEFT are imported (that is what
    made it take 40-50 s on a busy machine)."""
    code, out, err, imported = _run(target, "--help")
    assert code == 0, err[-2000:]
    assert out.startswith("usage:"), out[:300]
    assert imported == [], f"{target} --help imported {imported}"
    assert len(out.splitlines()) < 250, f"{target} --help is {len(out.splitlines())} lines"


@pytest.mark.parametrize("script", CONFIG_SCRIPTS)
def test_misspelt_flag_is_refused_before_the_libraries_load(script):
    cfg = {"evaluate": "evals/configs/smoke_cpu.yaml"}.get(script, "training/configs/smoke_cpu.yaml")
    typo, meant = {"evaluate": ("--answer_mod", "answer_mode")}.get(script, ("--lora_rr", "lora_r"))
    code, out, err, imported = _run(f"scripts/{script}.py", "--config", cfg, typo, "3")
    assert code == 2, out + err
    assert f"unknown option '{typo[2:]}' in command line; did you mean {meant}" in err
    assert len(err.strip().splitlines()) == 1, err
    assert imported == [], imported


@pytest.mark.parametrize("script", SCRIPTS)
def test_any_script_refuses_an_unknown_flag_before_the_libraries_load(script):
    code, out, err, imported = _run(f"scripts/{script}.py", "--bogus_flg", "1")
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and "error:" in err, err
    assert imported == [], imported


def test_dashed_flag_is_not_a_typo():
    check_flags(["--config", "x.yaml", "--lora-r", "8", "--max_pixels=3136"], ["--config", "--lora_r", "--max_pixels"])
    with pytest.raises(VLMStudiesError, match="unknown option 'lora_rnak' in command line; did you mean lora_r"):
        check_flags(["--lora-rnak", "8"], ["--lora_r"])


@pytest.mark.parametrize("name,package", [(s, "scripts") for s in SCRIPTS if s not in CONFIG_SCRIPTS]
                         + [(b, "bench") for b in BENCH] + [("plan_run", "scripts")])
def test_underscore_flags_with_hidden_dashed_aliases_and_help_for_each(name, package):
    parser = _light_parser(name, package)
    text = parser.format_help()
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs:
            continue
        canonical = longs[0]
        assert "-" not in canonical[2:], f"{name}: {canonical} is spelt with dashes; use underscores"
        if "_" in canonical:
            alias = "--" + canonical[2:].replace("_", "-")
            assert parser._option_string_actions.get(alias) is action, f"{name}: {alias} is not accepted"
            assert not re.search(rf"(^|[\s,\[]){re.escape(alias)}\b", text), f"{name}: help lists {alias}"
        # (help=SUPPRESS is a deliberate choice: a bench's internal flags for its child processes)
        assert action.help, f"{name}: {canonical} has no help"


def test_dashed_and_underscore_spellings_parse_alike():
    parser = _light_parser("model_playground")
    a = parser.parse_args(["--max-new-tokens", "5", "--top-p", "0.5", "--load-in-4bit", "--no-log"])
    b = parser.parse_args(["--max_new_tokens", "5", "--top_p", "0.5", "--load_in_4bit", "--no_log"])
    assert vars(a) == vars(b) and a.max_new_tokens == 5 and a.top_p == 0.5 and a.load_in_4bit and a.no_log


def test_unknown_flag_names_the_closest(capsys):
    parser = _light_parser("prepare_data")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--rows-per-shrd", "3"])
    assert exc.value.code == 2
    assert "unknown option '--rows_per_shrd'; did you mean --rows_per_shard?" in capsys.readouterr().err


def test_no_abbreviations():
    parser = ArgumentParser()
    parser.add_argument("--answer_mode")
    with pytest.raises(SystemExit):
        parser.parse_args(["--answer", "x"])


@pytest.mark.parametrize("script", sorted(STORED_HELP))
def test_stored_help_is_what_the_parser_prints(script):
    """utils/cli_help/<script>.json must match the live parser; rewrite it with `python -m utils.cli
    --write_help` after changing an option."""
    data = stored_help(script)
    assert data is not None, f"utils/cli_help/{script}.json is stale: run python -m utils.cli --write_help"
    module = importlib.import_module(f"scripts.{script}")
    brief, full = module.make_parser(), module.make_parser(full=True)
    brief.prog = full.prog = f"{script}.py"
    assert data["help"] == brief.format_help()
    assert data["help_all"] == full.format_help()
    assert data["options"] == sorted({o for a in full._actions for o in a.option_strings})


@pytest.mark.parametrize("script", sorted(STORED_HELP))
def test_config_script_help_layout(script):
    """--config and the most used options first; every option has help, negative flags their own."""
    module = importlib.import_module(f"scripts.{script}")
    brief, full = module.make_parser(), module.make_parser(full=True)
    text = brief.format_help()
    options = text[text.index("main options:"):]
    assert options.index("--config") < options.index("--model") < options.index("--run_name") \
        or options.index("--config") < options.index("--run_name") < options.index("--model")
    assert not [o for o in re.findall(r"^  (?:-h, )?(--\S+)", options, re.M) if "-" in o[2:]]  # nothing dashed
    by_dest = {}
    for action in full._actions:
        if not action.option_strings:
            continue
        assert action.help and action.help != argparse.SUPPRESS, f"{script}: {action.option_strings[0]} has no help"
        by_dest.setdefault(action.dest, []).append(action)
    for dest, actions in by_dest.items():
        if len(actions) > 1:  # --x and --no_x: each says what it does
            assert len({a.help for a in actions}) == len(actions), f"{script}: --no_{dest} repeats --{dest}'s help"
    if script == "train":
        assert len(text.splitlines()) < 250 and len(full.format_help().splitlines()) > 400
        assert "--adam_beta1" in text  # named, described by --help_all


# --- every command line in the docs parses --------------------------------------------------------------------

def _doc_blocks() -> list[tuple[str, str]]:
    """(where, text) of every bash/powershell block of the README and every script's and bench module's
    docstring."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [(f"README.md block {i}", m.group(1))
              for i, m in enumerate(re.finditer(r"```(?:bash|powershell)\n(.*?)```", readme, re.S))]
    for folder, names in (("scripts", SCRIPTS), ("bench", BENCH)):
        for name in names:
            doc = importlib.import_module(f"{folder}.{name}").__doc__ or ""
            blocks.append((f"{folder}/{name}.py docstring", doc))
    return blocks


def doc_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script-or-bench-module, argv) for each documented command line."""
    out = []
    for where, text in _doc_blocks():
        text = re.sub(r"\s*(\\|`)\n\s*", " ", text)  # bash and PowerShell line continuations
        for line in text.splitlines():
            line = line.strip()
            m = re.search(r"(?:^|[\s;&|(])(?:python|\.venv\S*python\S*|accelerate launch.*?)\s+(?:dev\.py\s+run\s+)?"
                          r"(scripts/\w+\.py|-m\s+bench\.\w+)(.*)$", line)
            if not m or line.startswith(("#", ">>>")):
                continue
            target = m.group(1).replace("-m", "").strip()
            rest = re.split(r"\s#\s|\s#$|\s\|\s|\s&&\s|\s;\s", m.group(2))[0]
            argv = shlex.split(rest, posix=True)
            argv = [a.strip("[]") for a in argv if a not in ("[", "]", "...")]  # `[--compare RUN]`: optional parts
            out.append((where, target, [a for a in argv if a]))
    return out


DOC_COMMANDS = doc_commands()


def test_the_docs_show_command_lines():
    targets = {t for _, t, _ in DOC_COMMANDS}
    assert {"scripts/train.py", "scripts/evaluate.py", "scripts/model_playground.py", "bench.run"} <= targets
    assert len(DOC_COMMANDS) > 60


@pytest.mark.parametrize("where,target,argv", DOC_COMMANDS,
                         ids=[f"{w}: {t} {' '.join(a)}"[:120] for w, t, a in DOC_COMMANDS])
def test_documented_command_line_parses(where, target, argv, monkeypatch):
    """Parse only (nothing runs); a config a command names is read, so it must exist."""
    monkeypatch.chdir(REPO_ROOT)
    package, name = ("bench", target.split(".")[1]) if target.startswith("bench.") else \
        ("scripts", target.split("/")[1][:-3])
    module = importlib.import_module(f"{package}.{name}")
    if "-h" in argv or "--help" in argv:
        return
    if hasattr(module, "parse_args"):
        try:
            module.parse_args(argv)
        except VLMStudiesError as exc:
            # a GPU-only option on this CPU machine parses fine; only that check may refuse
            assert "needs a CUDA GPU" in str(exc), f"{where}: {target} {shlex.join(argv)}: {exc}"
    else:
        module.make_parser().parse_args(argv)
