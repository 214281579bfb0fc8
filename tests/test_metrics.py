"""Metrics on a hand-made predictions file equal values worked out by hand (in the comments)."""

import json

import pytest

from evals.metrics import auroc, binom_two_sided_exact, compute_metrics, mcnemar, wilson_interval
from evals.predictions import read_predictions


def rec(uid, label, pred, p, valid=True):
    return {"uid": uid, "pair_key": uid.rsplit("-", 1)[0], "label": label, "prediction": pred, "p_true": p,
            "valid": valid, "correct": valid and pred == label, "slices": ["kw:numbers"] if uid < "c" else []}


# uid        pair  label  pred     p_true  correct   confidence of the prediction
HAND = [
    rec("a-0-0", True, True, 0.9),     # yes   0.9  -> bin [0.9, 1.0]
    rec("a-0-1", False, False, 0.2),   # yes   0.8  -> bin [0.8, 0.9)
    rec("b-0-0", True, False, 0.4),    # no    0.6  -> bin [0.6, 0.7)
    rec("b-0-1", False, False, 0.1),   # yes   0.9  -> bin [0.9, 1.0]
    rec("c-0-0", True, True, 0.7),     # yes   0.7  -> bin [0.7, 0.8)
    rec("c-0-1", False, True, 0.6),    # no    0.6  -> bin [0.6, 0.7)
    rec("d-0-0", True, None, None, valid=False),  # invalid answer: wrong, no p_true
    rec("d-0-1", True, True, 1.0),     # yes   1.0  -> bin [0.9, 1.0]
]


@pytest.fixture
def hand_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in HAND))
    return path


def test_metrics_equal_hand_computed_values(hand_file):
    m = compute_metrics(read_predictions(hand_file), bins=10)
    assert m["n"] == 8 and m["correct"] == 5
    assert m["accuracy"] == 5 / 8
    # Wilson 95% for 5/8: centre (0.625 + z^2/16) / (1 + z^2/8), half-width z*sqrt(pq/8 + z^2/256) / (1 + z^2/8)
    assert m["accuracy_ci95"] == pytest.approx([0.30574, 0.86316], abs=1e-4)
    assert m["invalid"] == 1 and m["invalid_rate"] == 1 / 8
    assert m["accuracy_valid"] == 5 / 7
    # pairs a (both right), b (one wrong), c (one wrong), d (one invalid) -> 1 of 4 consistent
    assert m["consistency"]["groups"] == 4 and m["consistency"]["consistency"] == 0.25
    # gold labels: 5 True, 3 False -> always True scores 5/8
    assert m["majority_baseline"] == {"majority_label": True, "accuracy": 5 / 8, "share_true": 5 / 8}
    cal = m["calibration"]
    assert cal["n"] == 7  # the invalid answer has no p_true
    # bins: [0.6,0.7): 2 ex, conf 0.6, acc 0 -> |0-0.6|; [0.7,0.8): 1, 0.7, acc 1 -> 0.3; [0.8,0.9): 1, 0.8, 1 -> 0.2;
    # [0.9,1]: 3, conf (0.9+0.9+1)/3, acc 1 -> 0.0667.  ECE = (2*0.6 + 0.3 + 0.2 + 3*0.0667) / 7 = 1.9 / 7
    assert cal["ece"] == pytest.approx(1.9 / 7, abs=1e-12)
    # positives p = .9 .4 .7 1.0, negatives .2 .1 .6: 11 of 12 pairs ordered right
    assert cal["auroc"] == pytest.approx(11 / 12)
    # Brier: (.1^2 + .2^2 + .6^2 + .1^2 + .3^2 + .6^2 + 0^2) / 7
    assert cal["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.01 + 0.09 + 0.36) / 7)
    assert m["confusion"] == {"True": {"True": 3, "False": 1, "invalid": 1}, "False": {"True": 1, "False": 2, "invalid": 0}}
    assert m["share_pred_true"] == 4 / 8
    # slice kw:numbers = the a- and b- uids: 3 of 4 right
    assert m["slices"]["kw:numbers"]["n"] == 4 and m["slices"]["kw:numbers"]["accuracy"] == 3 / 4
    assert m["slices"]["all"]["accuracy"] == 5 / 8


def test_small_cases_by_hand():
    assert auroc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert auroc([0.2, 0.8], [True, False]) == 0.0
    assert auroc([0.3, 0.3], [True, True]) is None  # one class only: undefined
    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.72247, abs=1e-4)
    # McNemar exact: 1 vs 6 discordant -> 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125
    t = mcnemar([True, False, False, False, False, False, False, True],
                [False, True, True, True, True, True, True, True])
    assert (t["a_only_correct"], t["b_only_correct"]) == (1, 6) and t["p_value"] == 0.125
    assert binom_two_sided_exact(0, 0) == 1.0 and binom_two_sided_exact(3, 6) == 1.0


def test_torn_last_line_is_repaired_and_middle_damage_refused(hand_file):
    intact = hand_file.read_bytes()
    hand_file.write_bytes(intact + b'{"uid": "e-0-0", "lab')  # a kill in the middle of a write
    assert [r["uid"] for r in read_predictions(hand_file, repair=True)] == [r["uid"] for r in HAND]
    assert hand_file.read_bytes() == intact  # cut back to the last whole line
    hand_file.write_bytes(intact.replace(b'"a-0-1"', b'"a-0-1', 1))
    from utils.errors import VLMStudiesError

    with pytest.raises(VLMStudiesError, match="line 2 is not valid JSON"):
        read_predictions(hand_file)
    hand_file.write_bytes(intact + intact.splitlines(keepends=True)[0])
    with pytest.raises(VLMStudiesError, match="twice"):
        read_predictions(hand_file)
