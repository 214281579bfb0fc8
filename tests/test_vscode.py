"""`.vscode/`: every Run and Debug entry starts a program that exists with arguments its parser accepts, the
Test Explorer finds the suite with HF_HUB_OFFLINE=1, and git does not hide any of it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from utils.paths import REPO_ROOT

VSCODE = REPO_ROOT / ".vscode"
FILES = ("launch.json", "settings.json", "extensions.json", "offline.env")


def _json(name: str) -> dict:
    return json.loads((VSCODE / name).read_text(encoding="utf-8"))  # plain JSON: no comments, no trailing commas


LAUNCH = _json("launch.json")
CONFIGS = LAUNCH["configurations"]


def _expand(value: str, inputs: dict) -> str:
    """VS Code's variables as it would substitute them; an input without a default gets a placeholder."""
    value = value.replace("${workspaceFolder}", str(REPO_ROOT)).replace("${file}", str(REPO_ROOT / "tests" /
                                                                                    "test_parser.py"))
    unknown = re.findall(r"\$\{(?!input:)[^}]+\}", value)
    assert not unknown, f"variable not understood here: {unknown}"
    return re.sub(r"\$\{input:([^}]+)\}", lambda m: inputs[m.group(1)].get("default", "RUN"), value)


def _env_file(path) -> dict:
    pairs = (ln.split("=", 1) for ln in path.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_main_jobs_have_an_entry():
    programs = [c.get("program", "").rsplit("/", 1)[-1] for c in CONFIGS]
    for script in ("train.py", "evaluate.py", "analyze.py", "model_playground.py"):
        assert script in programs, script
    assert any("--interactive" in c["args"] for c in CONFIGS if c.get("program", "").endswith("model_playground.py"))
    assert any(c.get("module") == "pytest" for c in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_launch_entry_exists_and_its_arguments_parse(config, root):
    inputs = {i["id"]: i for i in LAUNCH.get("inputs", [])}
    assert config["type"] == "debugpy" and config["request"] == "launch"
    assert _expand(config["cwd"], inputs) == str(REPO_ROOT)
    assert _env_file(REPO_ROOT / _expand(config["envFile"], inputs).replace(str(REPO_ROOT) + "/", ""))[
        "HF_HUB_OFFLINE"] == "1"
    args = [_expand(a, inputs) for a in config.get("args", [])]
    if "module" in config:  # pytest: its own parser, by collecting without running
        assert importlib.util.find_spec(config["module"]) is not None
        proc = subprocess.run([sys.executable, "-m", config["module"], *args, "--collect-only",
                               "-p", "no:cacheprovider"], cwd=REPO_ROOT, capture_output=True, text=True,
                              encoding="utf-8", errors="replace", env=dict(os.environ, HF_HUB_OFFLINE="1"),
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert re.search(r"^\d+ tests? collected", proc.stdout, re.M), proc.stdout[-2000:]
        return
    program = REPO_ROOT / _expand(config["program"], inputs).replace(str(REPO_ROOT) + "/", "")
    assert program.is_file(), program
    module = importlib.import_module(f"scripts.{program.stem}")
    if hasattr(module, "parse_args"):  # config-file scripts: the config is read and every key checked
        module.parse_args(args)
    else:
        module.make_parser().parse_args(args)


def test_default_eval_run_is_what_the_smoke_eval_writes():
    """The Analyze entry's default is the run name 'Evaluate (CPU smoke, zero-shot)' produces."""
    from evals.runner import default_run_name
    from scoring.tasks import get_task
    from scripts.evaluate import parse_args

    (args,), _, _ = parse_args(["--config", "evals/configs/smoke_cpu.yaml"])
    default = {i["id"]: i for i in LAUNCH["inputs"]}["evalRun"]["default"]
    assert default == default_run_name(args, get_task(args.task), args.split, None)


def test_test_explorer_settings_and_extensions():
    settings = _json("settings.json")
    assert settings["python.testing.pytestEnabled"] is True and settings["python.testing.unittestEnabled"] is False
    assert settings["python.testing.pytestArgs"] == ["tests"]
    env_file = settings["python.envFile"].replace("${workspaceFolder}", str(REPO_ROOT))
    assert _env_file(REPO_ROOT / os.path.relpath(env_file, REPO_ROOT))["HF_HUB_OFFLINE"] == "1"
    recommended = _json("extensions.json")["recommendations"]
    assert {"ms-python.python", "ms-python.debugpy", "ms-toolsai.jupyter"} <= set(recommended)


def test_git_does_not_ignore_the_vscode_folder():
    paths = [f".vscode/{name}" for name in FILES]
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=REPO_ROOT, capture_output=True, text=True,
                          encoding="utf-8")
    assert proc.returncode == 1 and proc.stdout == "", f"ignored by .gitignore: {proc.stdout}"  # 1: none ignored
