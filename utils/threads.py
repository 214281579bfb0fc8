"""How many CPU threads torch uses: a default that does not collapse on a busy machine (Setup/NOTES.md §9).

torch's own default is one thread per core. Its OpenMP threads spin-wait for each other between
operations, so when another process holds a core, every operation waits for a thread that is not
running: on a shared 2-core machine an eval ran at 4.7 examples/s with 2 threads against 68 with 1.

The rule (`default_torch_threads`): the cores this process may use, less the cores busy by the 1-minute
load average (rounded) and less the DataLoader workers it starts beside itself, capped at the physical
cores, and at least 1. On an idle 2-core machine with no workers: 2; with another process running, or
with 2 feed workers: 1. Give `--torch_threads N` to decide yourself; what was used, and why, is recorded.
"""

from __future__ import annotations

import os
from utils.run_meta import load_average_1m


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or usable_cores()
    except ImportError:
        return usable_cores()


def default_torch_threads(workers: int = 0, load: float | None = None) -> tuple[int, str]:
    """`(threads, why)` by the rule in the module docstring; `load`: the 1-minute load (default: measured)."""

    cores, physical = usable_cores(), physical_cores()
    load = load_average_1m() if load is None else load
    busy = int(load + 0.5) if load is not None else 0
    threads = max(1, min(physical, cores - busy - workers))
    why = (f"auto: {cores} usable cores ({physical} physical) - {busy} busy (1-min load "
           f"{'n/a' if load is None else f'{load:.2f}'}) - {workers} DataLoader worker(s), at least 1")
    return threads, why


def apply_torch_threads(threads: int | None, workers: int = 0) -> dict:
    """Set torch's intra-op threads to `threads`, or to the default rule's when None; returns what to record."""
    import torch

    if threads is None:
        threads, why = default_torch_threads(workers)
    else:
        why = "given (--torch_threads)"
    if threads < 1:
        raise ValueError(f"torch_threads must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    return {"threads": torch.get_num_threads(), "from": why}
