"""Studies that combine training and evaluation (above both packages; called by scripts).

    ablation.py   grids of train/eval cells, results tables and plots (scripts/ablate.py)
    reproduce.py  re-run a finished run from its recorded config and compare (scripts/reproduce.py)
"""
