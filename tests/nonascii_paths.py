"""The key paths with non-ASCII text everywhere, as a Windows user meets them; run by tests/test_encodings.py.

    python -X warn_default_encoding tests/nonascii_paths.py OUT MODEL_DIR SYNTHETIC_DIR

The root, the data folder, the config (comment and values), the run names, the sentences, a bookmark note
and a playground prompt all hold characters outside ASCII, and several outside cp1252 ("≥", "→", "实验").
Every script's `--help` and a short real run of the main jobs go through `utils.cli.main_guard` as the
scripts' `__main__` blocks do. Run it with `-X warn_default_encoding` and stdout/stderr in cp1252
(`PYTHONIOENCODING=cp1252`, what Windows gives output redirected to a file): an EncodingWarning raised in
this project's own modules is an error, third-party ones are ignored, and a character the console lacks
must not crash a print. Writes OUT/summary.json with what it read back, for the test to check.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from pathlib import Path

OUR_MODULES = r"(utils|training|evals|vlm_datasets|scripts|bench|colab)(\..*)?$"
SUFFIX = " — «≥ 1» → 实验"  # outside ASCII; "≥", "→" and "实验" outside cp1252
RUN = "étude-实验"
NOTE = "à revoir: ≥ 2 formes → 实验"
PROMPT = "Décris l'image de gauche → ≥ 1 forme ?"
CONFIG = """\
# Réglages d'essai: données « non ASCII » → ≥ 3 pas (实验)
model:
  model: {model}
  torch_threads: 1
data:
  source: {source}
  eval_split: validation
  eval_limit: 8
  accuracy_eval_steps: 0
  families: [grounding_left, grounding_right]
train:
  run_name: {run}
  max_steps: 3
  per_device_train_batch_size: 4
  save_steps: 2
  report_to: tensorboard
  disable_tqdm: true
  dataloader_num_workers: 0
"""


def script_modules() -> list[str]:
    """Every entry point: scripts/*.py, the bench modules with a main(), `python -m vlm_datasets.bookmarks`."""
    repo = Path(__file__).resolve().parent.parent
    names = [f"scripts.{p.stem}" for p in sorted((repo / "scripts").glob("*.py")) if p.stem != "__init__"]
    names += [f"bench.{p.stem}" for p in sorted((repo / "bench").glob("*.py"))
              if "\ndef main(" in p.read_text(encoding="utf-8")]
    return names + ["vlm_datasets.bookmarks"]


def run_main(module: str, argv: list[str]) -> int:
    """`module`'s main(argv) through the shared guard, exactly as `python -m module` / the script runs it."""
    from utils.cli import main_guard

    try:
        return main_guard(importlib.import_module(module).main, argv)
    except SystemExit as exc:  # argparse's --help exits 0
        return int(exc.code or 0)


def nonascii_copy(synthetic_dir: Path, out: Path) -> Path:
    """The synthetic set's train and validation splits with every sentence extended by `SUFFIX` (labels
    unchanged: they depend on the images and the original statement)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out.mkdir(parents=True)
    for f in sorted(synthetic_dir.glob("*.parquet")):
        table = pq.read_table(f)
        i = table.schema.get_field_index("sentence")
        table = table.set_column(i, "sentence", pc.binary_join_element_wise(table["sentence"], SUFFIX, ""))
        pq.write_table(table, out / f.name)
    return out


def main(out: Path, model_dir: str, synthetic_dir: str) -> None:
    warnings.simplefilter("ignore", EncodingWarning)  # third-party libraries: not ours to fix
    warnings.filterwarnings("error", category=EncodingWarning, module=OUR_MODULES)
    root = Path(os.environ["VLM_STUDIES_ROOT"])
    data = nonascii_copy(Path(synthetic_dir), out / "données-实验")
    summary: dict = {"help": {}}

    for module in script_modules():
        summary["help"][module] = run_main(module, ["--help"])
    summary["make_synthetic"] = run_main("scripts.make_synthetic_nlvr2", [
        "--out", str(out / "synthèse"), "--train", "8", "--validation", "4", "--test", "0"])

    config = out / "réglages.yaml"
    config.write_text(CONFIG.format(model=model_dir, source=data, run=RUN), encoding="utf-8")
    summary["train"] = run_main("scripts.train", ["--config", str(config)])
    summary["train_again"] = run_main("scripts.train", ["--config", str(config), "--resume"])  # reads it back
    summary["eval"] = run_main("scripts.evaluate", [
        "--config", "evals/configs/smoke_cpu.yaml", "--model", model_dir, "--source", str(data), "--task", "nlvr2",
        "--adapter", RUN, "--limit", "8", "--run_name", f"{RUN}-éval", "--progress", "false"])
    summary["eval_again"] = run_main("scripts.evaluate", [  # resumes: reads its own predictions back
        "--config", "evals/configs/smoke_cpu.yaml", "--model", model_dir, "--source", str(data), "--task", "nlvr2",
        "--adapter", RUN, "--limit", "8", "--run_name", f"{RUN}-éval", "--progress", "false"])
    summary["analyze"] = run_main("scripts.analyze", [f"{RUN}-éval", "--max_mistakes", "8"])
    summary["bookmark"] = run_main("vlm_datasets.bookmarks", ["add", "dev-0-0-0", "--tag", "revoir", "--note", NOTE])
    summary["bookmark_list"] = run_main("vlm_datasets.bookmarks", ["list"])
    summary["inspect"] = run_main("scripts.inspect_sample", ["--source", str(data), "--uid", "dev-0-0-0"])
    summary["playground"] = run_main("scripts.model_playground", [
        "--model", model_dir, "--source", str(data), "--uid", "dev-0-0-0", "--prompt", PROMPT,
        "--max-new-tokens", "6"])

    # what came back from disk
    run_dir = root / "checkpoints" / RUN
    summary["config_run_name"] = _yaml(run_dir / "config.yaml")["run_name"]
    summary["config_source"] = _yaml(run_dir / "config.yaml")["source"]
    summary["meta_run_name"] = _json(run_dir / "run_meta.json")["run_name"]
    eval_dir = root / "evals" / f"{RUN}-éval"
    predictions = [json.loads(line) for line in
                   (eval_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    summary["eval_sentences"] = sorted({p["sentence"] for p in predictions})
    summary["eval_n"] = len(predictions)
    summary["report_has_sentence"] = any(
        s in (eval_dir / "report" / "index.html").read_text(encoding="utf-8") for s in summary["eval_sentences"])
    summary["bookmark_note"] = _json(root / "bookmarks.json")["bookmarks"][0]["note"]
    log = [json.loads(line) for line in (root / "playground" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    summary["playground_prompt"] = log[0]["prompt"]
    summary["playground_sentence"] = log[0]["example"]["sentence"]
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
