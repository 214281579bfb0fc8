"""The frozen vision tower runs without autograd (training.model.vision_without_autograd), and nothing else changes.

Each case trains the trainer exactly as a run builds it (`build_trainer`, so TRL's and the Trainer's
`enable_input_require_grads` hooks are in place) for two optimizer steps, once as built and once with the
change removed, from the same seed and batches, and compares every LoRA gradient of both steps.
"""

from __future__ import annotations

import pytest
import torch



def _argv(tiny_model_dir, synthetic_dir, *extra):
    """A few fast steps on the tiny model; lr high enough that the second step's gradients differ from the first."""
    return ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--max_steps", "6",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--lora_r", "4", "--lora_alpha", "8",
            "--lora_dropout", "0", "--activation_checkpointing", "false", "--disable_tqdm", "true",
            "--torch_threads", "1", *extra]


class _Grads:
    """Trainer callback: a copy of every trainable parameter's gradient just before each optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Grab(TrainerCallback):
            def __init__(self):
                self.steps = []

            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                self.steps.append({n: p.grad.detach().clone() for n, p in model.named_parameters()
                                   if p.requires_grad})

        return Grab()


def _train_two_steps(tiny_model_dir, synthetic_dir, tmp_path, checkpointing: bool, merger: bool, no_grad: bool):
    """Gradients per step, and what the vision blocks did: forward runs (recomputation included), outputs
    recorded by autograd, gradients that reached a block output."""
    from training.data import load_train_data
    from training.model import load_for_training, vision_tower
    from training.options import parse_train_options
    from training.trainer import build_trainer
    from utils.seed import seed_everything

    argv = _argv(tiny_model_dir, synthetic_dir, "--report_to", "none", "--save_strategy", "no", "--eval_split",
                 "none", "--max_steps", "2", "--lora_dropout", "0.1", "--activation_checkpointing",
                 str(checkpointing).lower(), "--lora_vision_merger", str(merger).lower())
    (mo, lo, do, args), _, _ = parse_train_options(argv)
    args.output_dir = str(tmp_path / "out")
    seed_everything(args.seed)  # the same LoRA initialisation in both variants
    model, processor = load_for_training(mo, do, args)
    data = load_train_data(do, processor, args.max_length, args.seed)
    grads = _Grads()
    trainer = build_trainer(model, processor, data, args, lo, args.max_length, callbacks=[grads])
    assert trainer.vision_no_grad is not None  # no vision block is adapted here
    if not no_grad:
        trainer.vision_no_grad.remove()
    _, tower = vision_tower(trainer.model)
    seen = {"mlp_runs": 0, "in_graph": 0, "grads_in": 0}

    def count_runs(forward):
        def run(*a, **k):
            seen["mlp_runs"] += 1
            return forward(*a, **k)
        return run

    def watch(module, inputs, output):
        if output.requires_grad or output.grad_fn is not None:
            seen["in_graph"] += 1
            if output.requires_grad:
                output.register_hook(lambda g: seen.__setitem__("grads_in", seen["grads_in"] + 1))

    for block in tower.blocks:
        # An instance forward, not a hook: module hooks do not fire when checkpointing recomputes a block.
        block.mlp.forward = count_runs(block.mlp.forward)
        block.register_forward_hook(watch)
    trainer.train()
    assert len(grads.steps) == 2
    return grads.steps, seen, len(tower.blocks)


@pytest.mark.parametrize("merger", [False, True], ids=["lm_lora", "merger_lora"])
@pytest.mark.parametrize("checkpointing", [True, False], ids=["ckpt_on", "ckpt_off"])
def test_lora_gradients_unchanged_and_vision_blocks_leave_autograd(checkpointing, merger, tiny_model_dir,
                                                                   synthetic_dir, root, tmp_path, one_torch_thread):
    old, old_seen, blocks = _train_two_steps(tiny_model_dir, synthetic_dir, tmp_path, checkpointing, merger, False)
    new, new_seen, _ = _train_two_steps(tiny_model_dir, synthetic_dir, tmp_path, checkpointing, merger, True)

    names = sorted(old[0])
    assert names == sorted(new[0]) and all("lora_" in n for n in names)
    assert any(".visual.merger." in n for n in names) == merger
    assert not any(".visual.blocks." in n for n in names)
    for step_old, step_new in zip(old, new):
        for n in names:
            assert torch.allclose(step_old[n], step_new[n], rtol=1e-6, atol=1e-9), n
    # the second step's gradients depend on the first update: lora_A has a gradient only once lora_B moved
    assert all(new[1][n].abs().sum() > 0 for n in names)

    # With the change: no block output is recorded by autograd, no gradient reaches one, and each block runs
    # once per forward pass (no recomputation).
    assert new_seen == {"mlp_runs": 2 * blocks, "in_graph": 0, "grads_in": 0}
    if checkpointing:
        # Without it, the input-grad hook on the patch embedding puts the blocks in the graph: backpropagated
        # through and recomputed. This is the waste the change removes (and what makes this test able to fail).
        assert old_seen == {"mlp_runs": 4 * blocks, "in_graph": 2 * blocks, "grads_in": 2 * blocks}
    else:
        assert old_seen == new_seen  # no checkpointing, no hook: the old path was already free of it


def test_lora_on_the_vision_blocks_keeps_autograd_and_remove_restores(tiny_model_dir, synthetic_dir, root,
                                                                      tmp_path, one_torch_thread):
    from training.data import load_train_data
    from training.model import load_for_training, vision_tower, vision_without_autograd
    from training.options import parse_train_options
    from training.trainer import build_trainer

    def trainer_with(*extra):
        (mo, lo, do, args), _, _ = parse_train_options(_argv(tiny_model_dir, synthetic_dir, "--report_to", "none",
                                                             "--eval_split", "none", *extra))
        args.output_dir = str(tmp_path / "out")
        model, processor = load_for_training(mo, do, args)
        return build_trainer(model, processor, load_train_data(do, processor, args.max_length, args.seed), args,
                             lo, args.max_length)

    trainer = trainer_with("--lora_vision_blocks", "true")
    assert trainer.vision_no_grad is None  # the blocks train: they need autograd
    _, tower = vision_tower(trainer.model)
    assert all("forward" not in m.__dict__ for m in [tower.patch_embed, *tower.blocks])

    trainer = trainer_with()
    handle = trainer.vision_no_grad
    _, tower = vision_tower(trainer.model)
    wrapped = [tower.patch_embed, *tower.blocks]
    assert handle.describe()["modules"] == len(wrapped) and all("forward" in m.__dict__ for m in wrapped)
    assert vision_without_autograd(trainer.model).modules == wrapped  # installing twice wraps once
    with torch.enable_grad():
        x = torch.randn(4, tower.patch_embed.proj.weight[0].numel(), requires_grad=True)
        assert tower.patch_embed(x).grad_fn is None  # even with an input that requires grad
    handle.remove()
    assert all("forward" not in m.__dict__ for m in wrapped)
    with torch.enable_grad():
        assert tower.patch_embed(x).grad_fn is not None
