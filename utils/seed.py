"""Seeding: one call makes Python, NumPy and torch (CPU and CUDA) repeatable."""

from __future__ import annotations


def seed_everything(seed: int, deterministic: bool = False) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
