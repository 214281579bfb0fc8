"""Benchmarks that print figures (never assert timings)."""


def emit(res: dict, table: str, json_path=None) -> dict:
    """Print a benchmark's table and, when asked, write its figures as JSON (atomically)."""
    print(table)
    if json_path:
        from utils.io import atomic_write_json

        atomic_write_json(json_path, res)
    return res
