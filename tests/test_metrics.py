"""Metrics on a hand-made predictions file equal values worked out by hand (in the comments); NLVR2
consistency on hand-built identifiers, and against the official script's grouping rule."""

import json

import pytest

from scoring.metrics import auroc, binom_two_sided_exact, compute_metrics, mcnemar, wilson_interval
from scoring.predictions import read_predictions
from vlm_datasets.nlvr2 import parse_uid


def rec(uid, label, pred, p, valid=True, sl=()):
    return {"uid": uid, "label": label, "prediction": pred, "p_true": p, "valid": valid,
            "correct": valid and pred == label, "slices": list(sl)}


H = ("ling:cardinality_hard",)
# uid: NLVR2's split-set-pair-sentence; each sentence (group) is shown with two image pairs
# uid          group      label  pred     p_true  correct   confidence of the prediction
HAND = [
    rec("dev-1-0-0", True, True, 0.9, sl=H),       # dev-1--0   yes   0.9  -> bin [0.9, 1.0]
    rec("dev-1-1-0", False, False, 0.2, sl=H),     # dev-1--0   yes   0.8  -> bin [0.8, 0.9)
    rec("dev-2-0-0", True, False, 0.4, sl=H),      # dev-2--0   no    0.6  -> bin [0.6, 0.7)
    rec("dev-2-1-0", False, False, 0.1, sl=H),     # dev-2--0   yes   0.9  -> bin [0.9, 1.0]
    rec("dev-3-0-1", True, True, 0.7),             # dev-3--1   yes   0.7  -> bin [0.7, 0.8)
    rec("dev-3-2-1", False, True, 0.6),            # dev-3--1   no    0.6  -> bin [0.6, 0.7)
    rec("dev-4-1-0", True, None, None, valid=False),  # dev-4--0  invalid answer: wrong, no p_true
    rec("dev-4-3-0", True, True, 1.0),             # dev-4--0   yes   1.0  -> bin [0.9, 1.0]
]


@pytest.fixture
def hand_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in HAND), encoding="utf-8")
    return path


def test_metrics_equal_hand_computed_values(hand_file):
    m = compute_metrics(read_predictions(hand_file), bins=10)
    assert m["n"] == 8 and m["correct"] == 5
    assert m["accuracy"] == 5 / 8
    # Wilson 95% for 5/8: centre (0.625 + z^2/16) / (1 + z^2/8), half-width z*sqrt(pq/8 + z^2/256) / (1 + z^2/8)
    assert m["accuracy_ci95"] == pytest.approx([0.30574, 0.86316], abs=1e-4)
    assert m["invalid"] == 1 and m["invalid_rate"] == 1 / 8
    assert m["accuracy_valid"] == 5 / 7
    # sentences dev-1--0 (both right), dev-2--0 (one wrong), dev-3--1 (one wrong), dev-4--0 (one invalid)
    # -> 1 of 4 consistent
    assert m["consistency"]["groups"] == 4 and m["consistency"]["consistency"] == 0.25
    assert m["consistency"]["ungrouped_rows"] == 0
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
    # slice ling:cardinality_hard = the dev-1 and dev-2 uids: 3 of 4 right
    assert m["slices"]["ling:cardinality_hard"]["n"] == 4 and m["slices"]["ling:cardinality_hard"]["accuracy"] == 3 / 4
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
    hand_file.write_bytes(intact + b'{"uid": "dev-5-0-0", "lab')  # a kill in the middle of a write
    assert [r["uid"] for r in read_predictions(hand_file, repair=True)] == [r["uid"] for r in HAND]
    assert hand_file.read_bytes() == intact  # cut back to the last whole line
    hand_file.write_bytes(intact.replace(b'"dev-1-1-0"', b'"dev-1-1-0', 1))
    from utils.errors import VLMStudiesError

    with pytest.raises(VLMStudiesError, match="line 2 is not valid JSON"):
        read_predictions(hand_file)
    hand_file.write_bytes(intact + intact.splitlines(keepends=True)[0])
    with pytest.raises(VLMStudiesError, match="twice"):
        read_predictions(hand_file)


# ----------------------------------------------------------------------------- NLVR2 consistency

# Sentence groups of 1 to 4 image pairs, mixed labels, and rows outside NLVR2's identifier format.
# uid                 group (pair field blanked)  label  pred   correct
GROUPED = [
    rec("dev-10-0-0", True, True, None),     # dev-10--0 (4 pairs, 2 True 2 False)   yes
    rec("dev-10-1-0", False, False, None),   # dev-10--0                              yes
    rec("dev-10-2-0", True, True, None),     # dev-10--0                              yes  -> group consistent
    rec("dev-10-3-0", False, False, None),   # dev-10--0                              yes
    rec("dev-10-0-1", True, True, None),     # dev-10--1 (3 pairs, 2 True 1 False)   yes
    rec("dev-10-1-1", False, True, None),    # dev-10--1                              NO   -> group inconsistent
    rec("dev-10-3-1", True, True, None),     # dev-10--1                              yes
    rec("train-7-0-0", False, False, None),  # train-7--0 (2 pairs, mixed)            yes  -> consistent
    rec("train-7-2-0", True, True, None),    # train-7--0                             yes
    rec("test1-3-1-2", True, False, None),   # test1-3--2 (1 pair)                    NO   -> inconsistent
    rec("test2-189-0-0", True, True, None),  # test2-189--0 (3 pairs, all True)       yes
    rec("test2-189-1-0", True, True, None),  # test2-189--0                           yes
    rec("test2-189-3-0", True, None, None, valid=False),  # test2-189--0   invalid = NO -> inconsistent
    rec("validation-5-0-0", False, False, None),  # validation-5--0 (hub split name)  yes  -> consistent
    rec("odd-uid", False, False, None),      # not NLVR2's format: its own group      yes  -> consistent
    rec("dev-850-0", True, True, None),      # three fields only: its own group       yes  -> consistent
]


def test_consistency_groups_one_sentence_over_its_pairs():
    from scoring.metrics import consistency, pair_consistency

    c = consistency(GROUPED)
    # groups: dev-10--0, dev-10--1, train-7--0, test1-3--2, test2-189--0, validation-5--0, and the two
    # ungrouped rows -> 8; consistent: dev-10--0, train-7--0, validation-5--0, odd-uid, dev-850-0 -> 5 of 8
    assert (c["groups"], c["consistent"], c["consistency"]) == (8, 5, 5 / 8)
    assert c["ungrouped_rows"] == 2
    # sizes: 1 pair: test1-3--2, validation-5--0, odd-uid, dev-850-0; 2: train-7--0; 3: dev-10--1,
    # test2-189--0; 4: dev-10--0.  16 rows / 8 groups
    assert c["group_sizes"] == {"1": 4, "2": 1, "3": 2, "4": 1} and c["mean_group_size"] == 2.0
    assert c["mixed_label_groups"] == 3  # dev-10--0, dev-10--1, train-7--0
    # per image pair instead (NOT NLVR2's metric): dev-10-0 {0-0 yes, 0-1 yes}, dev-10-1 {yes, NO},
    # dev-10-2 {yes}, dev-10-3 {yes, yes}, train-7-0, train-7-2, test1-3-1 {NO}, test2-189-0, test2-189-1,
    # test2-189-3 {invalid}, validation-5-0, + 2 ungrouped: 13 pairs, 10 all right
    p = pair_consistency(GROUPED)
    assert (p["groups"], p["consistent"]) == (13, 10) and p["ungrouped_rows"] == 2


def test_consistency_from_uids_when_records_predate_the_field_and_none_means_no_group():
    from scoring.metrics import compute_metrics, consistency

    with_field = [dict(r, consistency_group=parse_uid(r["uid"])["consistency_group"]) for r in GROUPED]
    assert consistency(with_field) == consistency(GROUPED)  # GROUPED has no field: parsed from the uid
    # a dataset that says "no group" (VSR: consistency_group None) is one group per row, whatever its uid
    vsr_like = [dict(r, consistency_group=None) for r in GROUPED]
    c = consistency(vsr_like)
    assert c["groups"] == len(GROUPED) == c["ungrouped_rows"]
    assert c["consistency"] == compute_metrics(vsr_like)["accuracy"]


def official_consistency(predictions: dict, labeled_examples: list) -> tuple[float, int]:
    """NLVR2's own rule, re-implemented literally from nlvr2/eval/metrics.py (lil-lab/nlvr):
    split the identifier on '-', blank field 2 (the pair), join back; a group is consistent when no
    prediction in it is wrong."""
    consistency_dict = {}
    for example in labeled_examples:
        anon_label = example["identifier"].split("-")
        anon_label[2] = ''
        anon_label = '-'.join(anon_label)
        if anon_label not in consistency_dict:
            consistency_dict[anon_label] = True
        prediction = predictions[example["identifier"]]
        if prediction.lower() != example["label"].lower():
            consistency_dict[anon_label] = False
    return sum(consistency_dict.values()) / len(consistency_dict), len(consistency_dict)


def _nlvr2_identifiers(seed: int) -> list[str]:
    """A varied set in NLVR2's format: every split name, set ids of 1-5 digits, sentences 0-3 per set,
    each shown with 1-4 of the set's pairs in any order; plus identifiers as they appear in the release."""
    import random

    rng = random.Random(seed)
    out = []
    for split in ("train", "dev", "test1", "test2"):
        for _ in range(40):
            set_id = str(rng.randint(0, 10 ** rng.randint(1, 5) - 1))
            for sentence in range(rng.randint(1, 4)):
                for pair in rng.sample(range(4), rng.randint(1, 4)):
                    out.append(f"{split}-{set_id}-{pair}-{sentence}")
    # as in nlvr2/data/test2.json: one set's two sentences, each over its pairs in file order
    out += ["test2-189-0-0", "test2-189-1-0", "test2-189-3-0", "test2-189-2-0", "test2-189-3-1", "test2-189-1-1",
            "test2-189-0-1", "test2-189-2-1", "test2-935-0-1", "test2-935-3-1", "test2-935-1-1", "dev-850-0-0"]
    out = list(dict.fromkeys(out))
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_consistency_equals_the_official_script_on_nlvr2_identifiers(seed):
    import random

    from scoring.metrics import consistency

    rng = random.Random(100 + seed)
    ids = _nlvr2_identifiers(seed)
    labels = {i: rng.random() < 0.5 for i in ids}
    # mostly right, so that a fair share of groups is consistent and the comparison means something
    preds = {i: labels[i] if rng.random() < 0.85 else not labels[i] for i in ids}
    want, n_groups = official_consistency({i: str(p) for i, p in preds.items()},
                                          [{"identifier": i, "label": str(labels[i])} for i in ids])
    got = consistency([{"uid": i, "label": labels[i], "correct": preds[i] == labels[i]} for i in ids])
    assert got["groups"] == n_groups and got["ungrouped_rows"] == 0
    assert got["consistency"] == pytest.approx(want, abs=1e-12)
    assert 0.05 < want < 0.95  # neither trivial case
    # and the same groups, member for member
    official = {}
    for i in ids:
        parts = i.split("-")
        parts[2] = ""
        official.setdefault("-".join(parts), set()).add(i)
    ours = {}
    for i in ids:
        ours.setdefault(parse_uid(i)["consistency_group"], set()).add(i)
    assert ours == official
