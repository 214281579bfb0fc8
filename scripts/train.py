"""Fine-tune Qwen2-VL on NLVR2 with LoRA / Q-LoRA (TRL SFTTrainer + PEFT).

CPU smoke run (the small local model learns the synthetic grounding statements; 80 s on 2 cores at load ~4):
    python scripts/train.py --config training/configs/smoke_cpu.yaml
One GPU with bf16 (A100 / L4 / H100):
    python scripts/train.py --config training/configs/qwen2vl_2b_lora.yaml
Colab T4 (16 GB), 4-bit Q-LoRA:
    python scripts/train.py --config training/configs/qwen2vl_2b_qlora_t4.yaml
Several processes (each trains its share of every batch; only the main one writes the run dir):
    CUDA_VISIBLE_DEVICES= accelerate launch --config_file training/configs/accelerate/cpu_2proc.yaml \\
        scripts/train.py --config training/configs/smoke_cpu.yaml                   # 2 CPU processes
    accelerate launch --config_file training/configs/accelerate/ddp.yaml \\
        scripts/train.py --config training/configs/qwen2vl_2b_lora.yaml             # DDP; also fsdp.yaml, deepspeed_zero*.yaml
Override any option (every TrainingArguments key included); continue an interrupted run:
    python scripts/train.py --config training/configs/smoke_cpu.yaml --lora_r 8 --run_name try-r8
    python scripts/train.py --config training/configs/smoke_cpu.yaml --run_name try-r8 --resume

Outputs: <root>/checkpoints/<run_name>/ (config.yaml, run_meta.json, accuracy.json, checkpoint-N/,
adapter/) and TensorBoard events in <root>/logs/tb/<run_name>/. See training/trainer.py.
"""

from __future__ import annotations

import sys

from utils.cli import main_guard, quick_check


def make_parser(full: bool = False):
    """The full parser (imports TRL): what --help shows, and with `full` what --help_all shows."""
    from training.options import train_parser

    return train_parser(__doc__, full)


def parse_args(argv=None):
    """The run's options as `train` reads them: `((model, lora, data, args), resolved, extra)`. Nothing runs."""
    from training.options import parse_train_options

    return parse_train_options(argv, description=__doc__)


def main(argv=None):
    quick_check("train", argv)  # --help and a misspelt flag answered before the libraries load
    from training.options import train_options
    from training.trainer import train

    return train(train_options(argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(main_guard(main))
