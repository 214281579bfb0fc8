"""Looking inside the model: which image matters, where it looks, where the answer forms.

    (occlusion.py, capture.py and look.py, the computations, are in scoring/: training uses them too)
    run.py        options, per-uid pages and the resumable split run (<root>/analysis/inside/)
    figures.py    the pictures; page.py the offline HTML pages

Entry point: scripts/look_inside.py. Also used by scripts/analyze.py (pages of an eval's mistakes), the
playground (--look_inside, :inside) and training (occlusion_eval_steps).
"""
