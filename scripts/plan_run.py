"""Plan a training run before paying for it: visual tokens, sequence length, GPU memory, and fit per card.

    python scripts/plan_run.py --config training/configs/qwen2vl_2b_qlora_t4.yaml --gpu T4
    python scripts/plan_run.py --config training/configs/qwen2vl_2b_lora.yaml --gpu L4 A100-40
    python scripts/plan_run.py --config training/configs/qwen2vl_2b_lora.yaml --per_device_train_batch_size 4 --max_pixels 200704
    python scripts/plan_run.py --config training/configs/qwen2vl_2b_lora.yaml --image_size 640x480 500x375 --json plan.json

No model, processor or data is loaded: the options are parsed exactly as scripts/train.py parses them (any
training option is a flag here too), then training/planner.py does the arithmetic. Images are sized at the
config's pixel budget (the lab's default 4*28*28 .. 512*28*28 where it sets none, as a run would); the text is
counted with Qwen2's real vocabulary when dashscope is installed (a few seconds to build), else estimated. Memory comes
from a model fitted to measured H100 figures (bench/results/gpu_bench_h100_2026-11-27.json); the output
names the calibration points, what was not measured, and a WARNING for each --gpu card the config's method
will not fit. For every card it also recommends the per-device batch and gradient accumulation that keep the
config's effective batch: the largest batch that fits. The calibration predates the frozen vision tower
running without autograd, so it over-estimates and those batches are cautious.
Cards: T4 (no native bf16: fp32 here), L4, A10G, A100-40, A100-80, H100.
"""

from __future__ import annotations

import sys

from utils.cli import ArgumentParser, main_guard, quick_check


def make_parser() -> ArgumentParser:
    """The planner's own flags (no library needed); every other flag is a training option."""
    from training.planner import GPUS, TYPICAL_SENTENCE

    pre = ArgumentParser(description=__doc__, epilog="Every training option (scripts/train.py --help) is accepted "
                                                     "too, --config first among them.")
    pre.add_argument("--gpu", nargs="+", default=[], help=f"cards to check: {', '.join(GPUS)}")
    pre.add_argument("--image_size", nargs="+", default=None, metavar="WxH",
                     help="one size (both images) or two (left, right); default NLVR2-sized 1024x768 each")
    pre.add_argument("--sentence", default=TYPICAL_SENTENCE, help="the statement whose text tokens are counted")
    pre.add_argument("--json", default=None, help="also write the plan here")
    return pre


def parse_args(argv=None):
    """`(ns, ((model, lora, data, args), resolved, extra), rest)`: the planner's flags and the training options,
    parsed as scripts/train.py parses them. Nothing is planned."""
    from training.options import parse_train_options

    argv = list(sys.argv[1:] if argv is None else argv)
    ns, rest = make_parser().parse_known_args(argv)
    return ns, parse_train_options(rest, description=__doc__, for_this_machine=False), rest


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        return None
    quick_check("train", parser.parse_known_args(argv)[1])  # a misspelt flag fails before the libraries load
    from training.planner import NLVR2_PAIR, as_dict, card, explicit_bf16, format_plan, parse_size, plan_config, \
        warnings_for
    from utils.errors import VLMStudiesError

    ns, ((model_opts, lora_opts, data_opts, args), _, extra), rest = parse_args(argv)
    named = [card(g).name for g in ns.gpu]
    sizes = NLVR2_PAIR
    if ns.image_size:
        if len(ns.image_size) > 2:
            raise VLMStudiesError("--image_size takes one size (both images) or two (left, right)")
        parsed = [parse_size(s) for s in ns.image_size]
        sizes = (parsed[0], parsed[0]) if len(parsed) == 1 else tuple(parsed)
    plan = plan_config(model_opts, lora_opts, data_opts, args, explicit_bf16(extra.config, rest), sizes, ns.sentence,
                       extra.config, root=extra.root)
    print(format_plan(plan, named))
    if ns.json:
        from utils.io import atomic_write_json

        atomic_write_json(ns.json, {**as_dict(plan), "named_gpus": named,
                                    "does_not_fit": warnings_for(plan, named)})
    return plan


if __name__ == "__main__":
    sys.exit(main_guard(main))
