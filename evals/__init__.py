"""Evaluation runs and what is read from them (the scoring itself is in `scoring/`).

    runner.py     one resumable eval run -> <root>/evals/<run_name>/
    report.py     the HTML report (plots, slices, gallery of mistakes, run comparison)
    dynamics.py   a training run's dynamics page
    inside/       the look-inside views (per-uid and split pages) built on scoring.look
    playground.py the playground's generation and log
    configs/      YAML for scripts/evaluate.py
"""
