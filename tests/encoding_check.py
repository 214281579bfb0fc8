"""Find text reads and writes that rely on the platform's default encoding (cp1252 on Windows).

    python tests/encoding_check.py          # lists every offending call, exit status 1 if any

Every text file this project reads or writes is UTF-8 (configs, run files, YAML written with
`allow_unicode`), so every call that opens text must say `encoding="utf-8"`: `open()` / `Path.open()`
in a text mode, `Path.read_text()` / `write_text()`, `subprocess` with `text=True`, text-mode temporary
files, `io.TextIOWrapper` and logging file handlers. Python warns about the rest only when started with
`-X warn_default_encoding`, and only on the lines that run; this reads the source, so a line a test never
reaches is checked too. The notebook's code cells are checked like modules.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", "venv", "artifacts", "build", "dist", "node_modules", "__pycache__"}
TEXT_MODES = {"r", "w", "a", "x", "r+", "w+", "a+", "x+", "rt", "wt", "at", "xt", "r+t", "w+t", "a+t"}
SUBPROCESS_CALLS = {"run", "Popen", "check_output", "check_call", "call"}
TEMPFILE_CALLS = {"NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile"}


def project_files(root: Path = REPO) -> list[Path]:
    """The project's own Python files and notebooks (no virtual environment, no artifacts)."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.startswith(".") for p in rel[:-1]):
            continue
        if path.suffix in (".py", ".ipynb") and path.is_file():
            out.append(path)
    return out


def _keywords(call: ast.Call) -> set[str]:
    return {k.arg for k in call.keywords if k.arg}


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _text_mode(mode_node, default_text: bool) -> bool:
    """Whether a mode argument opens text; a mode computed at run time counts as text (it must say)."""
    if mode_node is None:
        return default_text
    mode = _const_str(mode_node)
    return mode is None or "b" not in mode


def problems_in_source(source: str, where: str) -> list[str]:
    """`where:line: what` for each call in `source` that reads or writes text without naming an encoding."""
    out = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or "encoding" in _keywords(node):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        what = None
        if isinstance(f, ast.Name) and name == "open" or (owner in ("io", "codecs") and name == "open"):
            mode = node.args[1] if len(node.args) > 1 else _kw(node, "mode")
            if _text_mode(mode, True):
                what = "open() in text mode"
        elif isinstance(f, ast.Attribute) and name == "open" and owner not in ("os", "Image", "tarfile", "zipfile",
                                                                                 "gzip", "bz2", "lzma", "webbrowser"):
            first = node.args[0] if node.args else _kw(node, "mode")
            if first is None or _const_str(first) in TEXT_MODES:  # Path.open([mode]); Image.open(path) is not
                what = ".open() in text mode"
        elif name == "read_text" and isinstance(f, ast.Attribute) and not node.args:
            what = ".read_text()"
        elif name == "write_text" and isinstance(f, ast.Attribute) and len(node.args) < 2:
            what = ".write_text()"
        elif name in SUBPROCESS_CALLS and owner == "subprocess":
            if _is_true(_kw(node, "text")) or _is_true(_kw(node, "universal_newlines")):
                what = f"subprocess.{name}(text=True)"
        elif name in TEMPFILE_CALLS:
            mode = node.args[0] if node.args else _kw(node, "mode")
            if _text_mode(mode, False):
                what = f"{name}() in text mode"
        elif name == "TextIOWrapper" or name == "fdopen" and _text_mode(
                node.args[1] if len(node.args) > 1 else _kw(node, "mode"), True):
            what = f"{name}() in text mode"
        elif name == "FileHandler":
            what = "logging.FileHandler()"
        if what:
            out.append(f"{where}:{node.lineno}: {what} without encoding=")
    return out


def notebook_source(path: Path) -> list[tuple[str, str]]:
    """(where, code) of each code cell, IPython magics and shell lines left out."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        code = "".join(cell.get("source", []))
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())
        cells.append((f"{path.relative_to(REPO)}[cell {i}]", code))
    return cells


def find_problems(files=None) -> list[str]:
    out = []
    for path in files or project_files():
        if path.suffix == ".ipynb":
            for where, code in notebook_source(path):
                out += problems_in_source(code, where)
        else:
            out += problems_in_source(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    return out


if __name__ == "__main__":
    found = find_problems()
    print("\n".join(found) or "every text read/write names its encoding")
    sys.exit(1 if found else 0)
