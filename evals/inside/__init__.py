"""Looking inside the model: which image matters, where it looks, where the answer forms.

    occlusion.py  neutral images, the five inputs of an example (original, left / right / both replaced,
                  swapped), effects and per-group summaries
    capture.py    recorders that ride along one forward pass: the answer row of every attention layer,
                  every layer's answer-position state (logit lens); visual tokens -> image cells
    look.py       one batched pass: score-mode P(True) of the five inputs + lens + attention shares
    run.py        options, per-uid pages and the resumable split run (<root>/analysis/inside/)
    figures.py    the pictures; page.py the offline HTML pages

Entry point: scripts/look_inside.py. Also used by scripts/analyze.py (pages of an eval's mistakes), the
playground (--look_inside, :inside) and training (occlusion_eval_steps).
"""
