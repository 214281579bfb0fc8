"""The one place that decides where artifacts go.

Everything a run writes lives under one root: `$VLM_STUDIES_ROOT` (or a `--root` flag), else the
Drive folder when Google Drive is mounted in Colab, else `artifacts/` inside the repo (whatever the current folder).

Names that come from data (uids, manifest entries, paths stored in dataset rows) become paths only
through `safe_file_stem` and `path_inside`, which keep them inside their folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from utils.errors import VLMStudiesError

ENV_VAR = "VLM_STUDIES_ROOT"
# Where Colab mounts Google Drive (the notebook mounts it here); VLM_STUDIES_DRIVE_MOUNT moves it, which the
# notebook's test does to mount a stand-in Drive in a temporary folder.
DRIVE_MOUNT = Path(os.environ.get("VLM_STUDIES_DRIVE_MOUNT") or "/content/drive")
DRIVE_MYDRIVE = DRIVE_MOUNT / "MyDrive"
DRIVE_ROOT = DRIVE_MYDRIVE / "VLM_Studies_Files"
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_ROOT = REPO_ROOT / "artifacts"

# A run name is one folder name on every platform: word characters of any script (so "étude" or "实验" work),
# digits and . _ - + = @; nothing Windows forbids in a name (<>:"/\|?* and a trailing dot), no device name.
_RUN_NAME = re.compile(r"\w[\w.=@+-]*(?<!\.)")


def _is_on_drive(path: Path) -> bool:
    try:
        path.resolve().relative_to(DRIVE_MOUNT.resolve())
        return True
    except ValueError:
        return str(path).replace("\\", "/").startswith(str(DRIVE_MOUNT).replace("\\", "/"))


def drive_mounted() -> bool:
    return DRIVE_MYDRIVE.is_dir()


def get_root(root: str | os.PathLike | None = None, create: bool = True) -> Path:
    """Resolve the artifact root: explicit `root`, else $VLM_STUDIES_ROOT, else Drive, else <repo>/artifacts.

    A root on Drive while Drive is not mounted is an error: writing there would create a
    local folder that disappears with the Colab VM.
    """
    chosen = root if root not in (None, "") else os.environ.get(ENV_VAR) or None
    if chosen is None:
        path = DRIVE_ROOT if drive_mounted() else LOCAL_ROOT
    else:
        path = Path(chosen).expanduser()
    if _is_on_drive(path) and not drive_mounted():
        raise VLMStudiesError(
            f"artifact root {path} is on Google Drive but Drive is not mounted; in Colab run "
            f"`from google.colab import drive; drive.mount('/content/drive')`, or set {ENV_VAR} / --root to a local folder")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VLMStudiesError(f"cannot create artifact root {path} ({exc.strerror}); set {ENV_VAR} or --root "
                                  f"to a writable folder") from exc
    return path


def subdir(name: str, root: str | os.PathLike | None = None, create: bool = True) -> Path:
    """`<root>/<name>`, e.g. subdir('checkpoints') or subdir('logs/tb')."""
    path = get_root(root, create=create) / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- names that come from data

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def safe_file_stem(text: str, max_len: int = 80) -> str:
    """A file-name stem made from data (a uid, a name in a dataset): one path component, on every OS.

    Letters, digits, `.`, `_` and `-` are kept; anything else (path separators, `..`, spaces, shell
    characters) becomes `_`. When the text had to change, a short hash of the original is appended, so
    two different uids never share a file (`a/b` and `a_b` stay apart).
    """
    text = str(text)
    stem = _UNSAFE.sub("_", text).strip("._")[:max_len] or "x"
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    if stem != text:
        import hashlib

        stem = f"{stem}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return stem


def path_inside(folder: str | os.PathLike, name: str) -> Path:
    """`folder / name`, refused unless it stays inside `folder` (symbolic links followed).

    Every path built from a name that comes from data (a uid, a manifest entry, a path stored in a
    dataset row) goes through here, so data can never make a tool read or write outside the folder.
    """
    base = Path(folder).expanduser()
    target = base / name
    try:
        inside = target.resolve().is_relative_to(base.resolve()) and target.resolve() != base.resolve()
    except (OSError, RuntimeError, ValueError):  # unresolvable (a link loop, an invalid name)
        inside = False
    if not inside:
        raise VLMStudiesError(f"refused path {str(name)!r}: it points outside {base}; names that come from data or "
                              f"options (uids, revisions, paths stored in rows) may only name files inside it")
    return target


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot be a run dir's name on every platform, or None when it can."""
    if not _RUN_NAME.fullmatch(name):
        return (f"run_name '{name}' must be one folder name (letters of any script, digits, . _ - + = @; not ending "
                f"in a dot)")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        return f"run_name '{name}' is a device name on Windows ({name.split('.')[0].upper()}); choose another"
    return None


def existing_names(name: str | os.PathLike, root=None, kinds: tuple[str, ...] = ("checkpoints", "evals")) -> list[str]:
    """What a mistyped run name, run dir or adapter might have meant: the folders beside `name` when its parent
    exists (given as a path), or the run names under `<root>/<kind>/` (given as a bare name)."""
    path = Path(name).expanduser()
    folders = [path.parent] if len(path.parts) > 1 else []
    try:
        base = get_root(root, create=False)
        folders += [base / kind for kind in kinds]
    except Exception:  # no root to look in (Drive not mounted...): the parent folder is enough
        pass
    names = []
    for folder in folders:
        try:
            names += [p.name if folder != path.parent else str(p) for p in folder.iterdir()
                      if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            continue
    return names
