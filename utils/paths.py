"""The one place that decides where artifacts go.

Everything a run writes lives under one root: `$VLM_STUDIES_ROOT` (or a `--root` flag), else the
Drive folder when Google Drive is mounted in Colab, else `./artifacts` beside the repo.
"""

from __future__ import annotations

import os
from pathlib import Path

from utils.errors import VLMStudiesError

ENV_VAR = "VLM_STUDIES_ROOT"
DRIVE_MOUNT = Path("/content/drive")
DRIVE_MYDRIVE = DRIVE_MOUNT / "MyDrive"
DRIVE_ROOT = DRIVE_MYDRIVE / "VLM_Studies_Files"
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_ROOT = REPO_ROOT / "artifacts"

SUBDIRS = ("checkpoints", "logs/tb", "datasets", "analysis", "evals", "playground", "models", "ablations")


def _is_on_drive(path: Path) -> bool:
    try:
        path.resolve().relative_to(DRIVE_MOUNT.resolve())
        return True
    except ValueError:
        return str(path).replace("\\", "/").startswith(str(DRIVE_MOUNT).replace("\\", "/"))


def drive_mounted() -> bool:
    return DRIVE_MYDRIVE.is_dir()


def get_root(root: str | os.PathLike | None = None, create: bool = True) -> Path:
    """Resolve the artifact root: explicit `root`, else $VLM_STUDIES_ROOT, else Drive, else ./artifacts.

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
