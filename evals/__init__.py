"""Evaluation: task registry, scoring, metrics, analysis.

    tasks/        the registry: how a row becomes prompt + images + gold answer, how a response is scored
    scoring.py    score mode (answer-token probabilities) and generate mode (greedy + parser), batched
    parser.py     generated text -> True / False / invalid
    slices.py     family and semantic phenomena (heuristic word rules) an example is reported in
    metrics.py    accuracy + Wilson CI, NLVR2 consistency, majority baseline, ECE/Brier/AUROC, McNemar
    predictions.py crash-safe predictions.jsonl (append + fsync per batch, torn-line repair)
    runner.py     one resumable eval run -> <root>/evals/<run_name>/
    report.py     the HTML report (plots, slices, gallery of mistakes, run comparison)
    configs/      YAML for scripts/evaluate.py
"""
