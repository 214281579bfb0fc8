"""Text encodings, as Windows meets them: files are UTF-8 whatever the platform's default (cp1252 there),
output survives a console code page without "≥", and non-ASCII configs, sentences and run names round-trip.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from encoding_check import find_problems, problems_in_source, project_files
from utils.paths import REPO_ROOT


def test_every_text_read_and_write_names_its_encoding():
    assert find_problems() == []


def test_the_check_finds_what_it_must():
    source = """
open("a.txt")
open(p, "w")
open(p, mode)
open(p, "rb")
open(p, "w", encoding="utf-8")
Path("a").read_text()
Path("a").read_text(encoding="utf-8")
Path("a").write_text(s)
Path("a").write_text(s, encoding="utf-8")
path.open("a")
path.open("rb")
Image.open(path)
subprocess.run(cmd, text=True)
subprocess.run(cmd, text=True, encoding="utf-8")
subprocess.run(cmd, capture_output=True)
tempfile.NamedTemporaryFile("w")
tempfile.NamedTemporaryFile()
"""
    lines = [int(p.split(":")[1]) for p in problems_in_source(source, "x")]
    assert sorted(lines) == [2, 3, 4, 7, 9, 11, 14, 17]
    assert any(p.name == "Playground.ipynb" for p in project_files())  # the notebook is checked too


def test_every_entry_point_prints_through_the_guard():
    """`safe_console` runs in `main_guard`: every `__main__` block of an entry point must go through it."""
    missing = []
    for path in [*(REPO_ROOT / "scripts").glob("*.py"), *(REPO_ROOT / "bench").glob("*.py"),
                 REPO_ROOT / "vlm_datasets" / "bookmarks.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "main_guard" not in ast.unparse(node):
                missing.append(path.name)
    assert missing == []


def test_key_paths_with_non_ascii_text_and_a_cp1252_console(tmp_path, tiny_model_dir, synthetic_dir):
    """tests/nonascii_paths.py in a process where our own EncodingWarnings are errors and stdout is cp1252."""
    out = tmp_path / "sortie"
    out.mkdir()
    root = tmp_path / "racine-实验"
    env = dict(os.environ, VLM_STUDIES_ROOT=str(root), PYTHONIOENCODING="cp1252", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONUTF8", None)
    proc = subprocess.run([sys.executable, "-X", "warn_default_encoding", str(REPO_ROOT / "tests" / "nonascii_paths.py"),
                           str(out), str(tiny_model_dir), str(synthetic_dir)], cwd=REPO_ROOT, env=env,
                          capture_output=True, timeout=900)
    stdout, stderr = proc.stdout.decode("cp1252"), proc.stderr.decode("cp1252", errors="replace")
    assert proc.returncode == 0, stderr[-4000:]
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))

    from nonascii_paths import NOTE, PROMPT, RUN, SUFFIX, script_modules

    assert s["help"] == {m: 0 for m in script_modules()} and len(s["help"]) >= 19
    for job in ("make_synthetic", "train", "train_again", "eval", "eval_again", "analyze", "bookmark",
                "bookmark_list", "inspect", "playground"):
        assert s[job] == 0, job
    assert s["config_run_name"] == s["meta_run_name"] == RUN and s["config_source"].endswith("données-实验")
    assert s["eval_n"] == 8 and s["eval_sentences"] and all(x.endswith(SUFFIX) for x in s["eval_sentences"])
    assert s["report_has_sentence"] and s["bookmark_note"] == NOTE
    assert s["playground_prompt"] == PROMPT and s["playground_sentence"].endswith(SUFFIX)
    # what cp1252 lacks came out escaped, the rest as itself
    assert "--run_name étude-\\u5b9e\\u9a8c --resume" in stdout and "\\u2265 2 formes \\u2192" in stdout
    assert "Traceback" not in stderr
