"""Scoring a model's answers: the pieces training and evals both use (neither imports the other).

    tasks/         the registry: how a row becomes prompt + images + gold answer, how a response is scored
    modes.py       score mode (answer-token probabilities) and generate mode (greedy + parser), batched
    parser.py      generated text -> True / False / invalid
    slices.py      family and semantic phenomena (heuristic word rules) an example is reported in
    metrics.py     accuracy + Wilson CI, NLVR2 consistency, majority baseline, ECE/Brier/AUROC, McNemar
    predictions.py crash-safe predictions.jsonl (append + fsync per batch, torn-line repair)
    occlusion.py   neutral images, the five inputs of an example (original, left / right / both replaced,
                   swapped), effects and per-group summaries
    capture.py     recorders that ride along one forward pass: the answer row of every attention layer,
                   every layer's answer-position state (logit lens); visual tokens -> image cells
    look.py        one batched pass: score-mode P(True) of the five inputs + lens + attention shares
"""
