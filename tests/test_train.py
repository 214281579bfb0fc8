"""Fine-tuning: scripts/train.py end to end on the tiny model, the label mask, the length guard, configs.

Every run is CPU, offline, a few steps of the `tiny` Qwen2-VL on the small synthetic set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from utils.errors import VLMStudiesError

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "training" / "configs").glob("*.yaml"))


def _argv(tiny_model_dir, synthetic_dir, *extra):
    """A few fast steps on the tiny model; LoRA lr high enough that every adapter weight moves."""
    return ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--max_steps", "6",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--lora_r", "4", "--lora_alpha", "8",
            "--lora_dropout", "0", "--activation_checkpointing", "false", "--logging_steps", "2", "--save_steps", "3",
            "--eval_limit", "16", "--eval_batch_size", "8", "--disable_tqdm", "true", "--torch_threads", "1",
            *extra]


def _train(argv):
    from scripts.train import main

    return main(argv)


def _events(tb_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict = {}
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            tags.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return tags


def _adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


# ----------------------------------------------------------------------------- options and configs

@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(config):
    from training.options import parse_train_options

    (model, lora, data, args), resolved, _ = parse_train_options(["--config", str(config)])
    text = config.read_text(encoding="utf-8")
    assert text.startswith("#") and "python scripts/train.py --config training/configs/" + config.name in text
    assert model.model and lora.lora_r > 0 and data.split == "train" and args.max_steps > 0
    assert resolved["model"] == model.model and not args.fp16


def test_unknown_key_is_a_clear_error(tmp_path, root):
    from training.options import parse_train_options

    with pytest.raises(VLMStudiesError, match="unknown option 'lora_rnak'.*did you mean lora_r"):
        parse_train_options(["--lora_rnak", "8"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  lora_r: 8\n  lora_alpah: 16\n", encoding="utf-8")
    with pytest.raises(VLMStudiesError, match="unknown option 'lora_alpah' in .*bad.yaml.*lora_alpha"):
        _train(["--config", str(bad)])
    assert not (root / "checkpoints").exists() or not any((root / "checkpoints").iterdir())


def test_accuracy_table_gives_nlvr2_consistency_per_family():
    """Before/after accuracy rows carry NLVR2 consistency and its group count (values worked out by hand)."""
    from scoring.modes import accuracy_by
    from training.evaluation import _Seen, format_table, with_consistency

    # uid          family           label  pred
    rows = [("dev-1-0-0", "grounding_left", True, True),     # sentence dev-1--0: both right -> consistent
            ("dev-1-1-0", "grounding_left", False, False),
            ("dev-1-0-1", "count", True, True),               # sentence dev-1--1: one wrong -> not
            ("dev-1-1-1", "count", False, True),
            ("dev-2-0-0", "grounding_left", True, False)]     # sentence dev-2--0: wrong -> not
    seen = [_Seen(u, y, {"family": f, "consistency_group": "-".join(u.split("-")[:2]) + "--" + u[-1]})
            for u, f, y, _ in rows]
    records = [{"uid": u, "prediction": p} for u, _, _, p in rows]
    table = with_consistency(accuracy_by(records, seen), records, seen)
    # grounding_left: groups dev-1--0 (consistent), dev-2--0 (not) -> 1/2; count: dev-1--1 -> 0/1; all: 1/3
    assert (table["grounding_left"]["consistency"], table["grounding_left"]["consistency_groups"]) == (0.5, 2)
    assert (table["count"]["consistency"], table["count"]["consistency_groups"]) == (0.0, 1)
    assert (table["all"]["consistency"], table["all"]["consistency_groups"]) == (1 / 3, 3)
    text = format_table(table, table)
    assert "consist." in text and "groups" in text
    assert [line.split()[:3] for line in text.splitlines()[1:]] == [["count", "2", "1"], ["grounding_left", "3", "2"],
                                                                    ["all", "5", "3"]]


# ----------------------------------------------------------------------------- end to end

def test_train_end_to_end_run_dir_tensorboard_and_reload(tiny_model_dir, synthetic_dir, root):
    """scripts/train.py main(argv): exactly the expected files, loss in TensorBoard, an adapter that reloads."""
    from utils.models import load_model_and_processor

    results = _train(_argv(tiny_model_dir, synthetic_dir, "--run_name", "e2e", "--accuracy_eval_steps", "3",
                           "--accuracy_eval_size", "8"))
    run = root / "checkpoints" / "e2e"
    assert sorted(p.name for p in run.iterdir()) == ["accuracy.json", "adapter", "checkpoint-3", "checkpoint-6",
                                                     "config.yaml", "dynamics.jsonl", "run_meta.json"]
    assert sorted(p.name for p in (run / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "base_model.json", "chat_template.jinja",
        "processor_config.json", "tokenizer.json", "tokenizer_config.json"]
    # Checkpoints: adapter + optimizer/scheduler/RNG state and the processor; never the base weights.
    assert sorted(p.name for p in (run / "checkpoint-6").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "optimizer.pt",
        "processor_config.json", "rng_state.pth", "scheduler.pt", "tokenizer.json", "tokenizer_config.json",
        "trainer_state.json", "training_args.bin"]
    saved = _adapter_tensors(run / "adapter")
    assert saved and all("lora_" in k for k in saved)  # nothing but LoRA weights travels with the adapter
    assert all(".language_model." in k for k in saved)  # vision modules are not adapted by default

    meta = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["git_sha"] is None or len(meta["git_sha"]) == 40
    assert meta["dataset"]["manifest_sha256"] and meta["dataset"]["mode"] == "cached"
    assert meta["prompt_template"] == {"name": "tf", "version": 1, "tag": "tf@v1"}
    assert meta["length_guard"]["visual_tokens_per_example"]["min"] > 0
    assert meta["results"]["global_step"] == 6 and meta["results"]["peak_rss_mib"] > 0
    flops = meta["results"]["flops"]  # counted per batch trained on (training/flops.py); no MFU on CPU
    assert flops["batches"] == 6 and flops["vision_patches"] == 4 * flops["visual_tokens"] > 0
    assert flops["model_flops"]["total"] > 0 and flops["mfu_total"] is None and flops["model_tflop_per_s"] > 0
    assert meta["results"]["vision_tower"]["without_autograd"] is True
    acc = json.loads((run / "accuracy.json").read_text(encoding="utf-8"))
    assert acc["before"]["all"]["n"] == acc["after"]["all"]["n"] == 16
    assert 0 < acc["after"]["all"]["consistency_groups"] < 16 and "consistency" in acc["before"]["all"]
    assert results["accuracy"]["after"] == acc["after"]
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"] == str(tiny_model_dir) and cfg["max_steps"] == 6 and cfg["run_name"] == "e2e"
    # no pixel options given: the lab's budget, written into the config and the metadata (never the processor's own)
    assert (cfg["min_pixels"], cfg["max_pixels"]) == (4 * 28 * 28, 512 * 28 * 28)
    assert meta["pixel_budget"] == {"min_pixels": 3136, "max_pixels": 401408, "max_visual_tokens_per_image": 512,
                                    "from": "lab default"}
    assert (meta["length_guard"]["min_pixels"], meta["length_guard"]["max_pixels"]) == (3136, 401408)

    tags = _events(root / "logs" / "tb" / "e2e")
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "train/samples_per_second",
                "eval/accuracy_all", "eval/share_pred_true_all"):
        assert tag in tags, f"{tag} not in {sorted(tags)}"
    assert len(tags["train/loss"]) == 3 and all(x > 0 for x in tags["train/loss"])
    assert len(tags["eval/accuracy_all"]) == 3  # steps 0 (before training), 3 and 6
    dynamics = (run / "dynamics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["step"] for line in dynamics] == [0, 3, 6]

    # The adapter folder loads on its own (processor files beside it) and on the base it names.
    from peft import PeftModel

    model, processor = load_model_and_processor(str(tiny_model_dir), adapter=str(run))
    assert isinstance(model, PeftModel) and processor.tokenizer.padding_side


def test_lora_moves_base_and_vision_do_not_and_reload_reproduces_logits(tiny_model_dir, synthetic_dir, root,
                                                                       tmp_path):
    """The trainer exactly as a run builds it: only LoRA weights change; a saved adapter gives the same logits."""
    from training.data import load_train_data
    from training.model import load_for_training
    from training.options import parse_train_options
    from training.trainer import build_trainer
    from utils.models import apply_adapter, load_model
    from vlm_datasets import build_inputs, load_nlvr2

    (mo, lo, do, args), _, _ = parse_train_options(_argv(tiny_model_dir, synthetic_dir, "--report_to", "none",
                                                         "--lora_vision_merger", "true"))
    args.output_dir = str(tmp_path / "out")
    model, processor = load_for_training(mo, do, args)
    data = load_train_data(do, processor, args.max_length, args.seed)
    trainer = build_trainer(model, processor, data, args, lo, args.max_length)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [k for k in before if "lora_" in k]
    assert lora and all(after[k].requires_grad for k in lora)
    assert all(not torch.equal(before[k], after[k]) for k in lora if "lora_B" in k)  # B starts at zero
    frozen = [k for k in before if "lora_" not in k]
    assert any(".visual.blocks." in k for k in frozen) and any("embed_tokens" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) and not after[k].requires_grad for k in frozen)
    assert any(".visual.merger." in k for k in lora)  # the merger switch adapts it; vision blocks stay out
    assert not any(".visual.blocks." in k for k in lora)

    trainer.save_model(str(tmp_path / "adapter"))
    trained = trainer.model.eval()
    reloaded = apply_adapter(load_model(str(tiny_model_dir)), tmp_path / "adapter").eval()
    exs = list(load_nlvr2(str(synthetic_dir), "validation", limit=3))
    inputs = [build_inputs(e, with_answer=False) for e in exs]
    texts = [processor.apply_chat_template(i["prompt"], tokenize=False, add_generation_prompt=True) for i in inputs]
    enc = processor(text=texts, images=[i["images"] for i in inputs], return_tensors="pt", padding=True)
    with torch.no_grad():
        a, b = trained(**enc).logits, reloaded(**enc).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_qlora_trains_on_cpu_streaming(tiny_model_dir, synthetic_dir, root):
    """4-bit NF4 base + LoRA, streamed data with a shuffle buffer, activation checkpointing with input grads."""
    _train(_argv(tiny_model_dir, synthetic_dir, "--run_name", "q", "--load_in_4bit", "true", "--mode", "streaming",
                 "--shuffle_buffer", "16", "--max_steps", "3", "--save_steps", "3", "--activation_checkpointing",
                 "true", "--eval_split", "none"))
    run = root / "checkpoints" / "q"
    saved = _adapter_tensors(run / "adapter")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())
    meta = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["dataset"]["mode"] == "streaming" and meta["results"]["global_step"] == 3
    assert meta["length_guard"]["sampled_rows"] > 0
    assert not (run / "accuracy.json").exists()
    with pytest.raises(VLMStudiesError, match="streaming training needs --max_steps"):
        _train(_argv(tiny_model_dir, synthetic_dir, "--run_name", "q2", "--mode", "streaming", "--max_steps", "-1"))


def test_run_dir_is_never_overwritten(tiny_model_dir, synthetic_dir, root):
    argv = _argv(tiny_model_dir, synthetic_dir, "--run_name", "once", "--max_steps", "2", "--save_steps", "2",
                 "--eval_split", "none")
    _train(argv)
    run = root / "checkpoints" / "once"
    stamp = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(VLMStudiesError, match="already exists; add --resume"):
        _train(argv)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == stamp
    finished = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))["results"]
    assert _train(argv + ["--resume"]) == finished
    with pytest.raises(VLMStudiesError, match="--resume needs --run_name"):
        _train(_argv(tiny_model_dir, synthetic_dir, "--resume"))
    with pytest.raises(VLMStudiesError, match="differ from the run's config.yaml.*learning_rate"):
        (run / "adapter").rename(run / "adapter.moved")  # an unfinished run, resumed with other options
        _train(argv + ["--resume", "--learning_rate", "0.5"])


# ----------------------------------------------------------------------------- labels and length guard

def _trainer_and_data(tiny_model_dir, synthetic_dir, tmp_path, *extra):
    from training.data import load_train_data
    from training.model import load_for_training
    from training.options import parse_train_options
    from training.trainer import build_trainer

    (mo, lo, do, args), _, _ = parse_train_options(_argv(tiny_model_dir, synthetic_dir, "--report_to", "none",
                                                         *extra))
    args.output_dir = str(tmp_path / "out")
    limit = args.max_length
    model, processor = load_for_training(mo, do, args)
    data = load_train_data(do, processor, limit, args.seed)
    return build_trainer(model, processor, data, args, lo, limit), data, processor


def test_only_the_answer_and_end_of_turn_carry_labels(tiny_model_dir, synthetic_dir, root, tmp_path):
    """A batch from the run's own collator: labels on exactly the answer tokens + <|im_end|>, at the end."""
    trainer, data, processor = _trainer_and_data(tiny_model_dir, synthetic_dir, tmp_path)
    ds = data.dataset
    rows = [ds[i] for i in range(8)]
    answers = [r["completion"][0]["content"][0]["text"] for r in rows]
    assert {"True", "False"} <= set(answers)
    batch = trainer.data_collator(rows)
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for i, answer in enumerate(answers):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        supervised = (labels != -100).nonzero().flatten().tolist()
        want = tok(answer, add_special_tokens=False)["input_ids"] + [im_end]
        assert labels[supervised].tolist() == want == ids[supervised].tolist()
        assert supervised == list(range(supervised[0], supervised[0] + len(want)))  # one contiguous span
        assert tok.decode(ids[:supervised[0]][mask[:supervised[0]].bool()]).endswith("<|im_start|>assistant\n")
        assert (labels[supervised[-1] + 1:] == -100).all()  # not the template's newline after <|im_end|>
    # TRL's own collator alone would also label that newline: the reason for the fix-up.
    raw = trainer.data_collator.inner([ds[i] for i in range(8)])  # fresh rows: collating rewrites them
    assert int((raw["labels"][0] != -100).sum()) == int((batch["labels"][0] != -100).sum()) + 1


def test_length_guard_is_exact_and_skips_overlong_examples(tiny_model_dir, synthetic_dir, root, tmp_path):
    trainer, data, processor = _trainer_and_data(tiny_model_dir, synthetic_dir, tmp_path)
    guard, ds = data.guard, data.dataset
    rows = [ds[i] for i in range(12)]
    batch = trainer.data_collator(rows)
    from vlm_datasets.nlvr2 import load_nlvr2

    exs = {e.uid: e for e in load_nlvr2(str(synthetic_dir), "train")}
    lengths = []
    for i, r in enumerate(rows):
        sentence = r["prompt"][0]["content"][-1]["text"].split("\n")[0]
        label = r["completion"][0]["content"][0]["text"] == "True"
        total, visual = guard.length(sentence, label, [im.size for im in r["images"]])
        assert total == int(batch["attention_mask"][i].sum())  # the guard's count is the collated length
        lengths.append(total)
    assert len(exs) == 64 and guard.summary()["examples_kept"] == 64

    # A limit between the shortest and the longest example: the long ones are skipped and counted.
    cut = sorted(lengths)[len(lengths) // 2]
    trainer2, data2, _ = _trainer_and_data(tiny_model_dir, synthetic_dir, tmp_path, "--max_length", str(cut))
    s = data2.guard.summary()
    assert s["examples_skipped_overlong"] > 0 and s["examples_kept"] > 0
    assert s["examples_kept"] + s["examples_skipped_overlong"] == 64 and s["tokens_per_example"]["max"] <= cut
    kept = [data2.dataset[i] for i in range(len(data2.dataset))]
    batch2 = trainer2.data_collator(kept[:8])
    assert int(batch2["attention_mask"].sum(-1).max()) <= cut
    assert trainer2.args.max_length is None  # TRL itself never truncates

    with pytest.raises(VLMStudiesError, match=r"needs \d+ tokens .* > max_length %d" % cut):
        _trainer_and_data(tiny_model_dir, synthetic_dir, tmp_path, "--max_length", str(cut), "--overlong", "error")


def test_a_truncating_collator_is_caught_before_training(tiny_model_dir, synthetic_dir, root, tmp_path):
    """If anything cut a sequence inside its image tokens, the batch check stops the run instead."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.data import GuardedCollator

    trainer, data, processor = _trainer_and_data(tiny_model_dir, synthetic_dir, tmp_path)
    rows = [data.dataset[i] for i in range(2)]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    full = trainer.data_collator([dict(r) for r in rows])
    first_image = int((full["input_ids"][0] == image_pad).nonzero()[0])
    # TRL's own collator with a max_length, as SFTConfig's default would make it: cuts inside the images.
    cutting = DataCollatorForVisionLanguageModeling(processor, max_length=first_image + 2, completion_only_loss=True)
    with pytest.raises(VLMStudiesError, match="image tokens"):
        GuardedCollator(cutting, processor, None)([dict(r) for r in rows])
