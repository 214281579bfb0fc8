"""Tokens per NLVR2 sentence: Qwen2's real vocabulary against the local toy vocabulary; and the build time.

    python -m bench.sentence_tokens                    # prints the table (and the figures as JSON)
    python -m bench.sentence_tokens --json out.json

No machine here reaches the dataset hub, so the sentences are published NLVR2 sentences, copied verbatim
(typos included): the two examples of Figure 1 of the NLVR2 paper (Suhr et al., ACL 2019,
arXiv:1811.00491), and the 45 distinct sentences of five stretches of the official release's test-U file
(github.com/lil-lab/nlvr, nlvr2/data/test2.json, read at character offsets 0, 700000, 1500000, 2300000 and
3100000 of its 3,774,241). Counts are of the sentence alone (no chat template), without special tokens.
Needs dashscope for the real vocabulary (pip install dashscope==2.0.2).
"""

from __future__ import annotations

import statistics
import sys
import time

from utils.cli import ArgumentParser

PAPER_FIGURE_1 = [
    "The left image contains twice the number of dogs as the right image, and at least two dogs in total are "
    "standing.",
    "One image shows exactly two brown acorns in back-to-back caps on green foliage.",
]
TEST_U_SAMPLE = [  # nlvr2/data/test2.json, in file order; set ids test2-189 ... test2-50
    "All the bottles are from the same brand.",
    "The left and right image contains seven beer bottles.",
    "Each image shows exactly one hatless man who is holding at least one beer bottle up off of any surface.",
    "Two men are holding bottles to their mouths.",
    "In one of the image, three brown bottles of beer are featured.",
    "There are exactly seven bottles not in a container.",
    "There is a cake with at least two beer bottles in it.",
    "The bottles in the image on the right are set into a cake.",
    "Two people are drinking from a bottle.",
    "In one of the images, you'll notice both a dog/dingo, and also a kangaroo.",
    "There are at least three dingoes.",
    "There are two dogs, standing, howling; none are sitting or laying.",
    "Each image contains one howling dingo, and the dogs on the left and right share similar type body poses.",
    "In one image a dingo is laying on the beach.",
    "An image shows a gun positioned by the body of at least one dead dog lying on the ground.",
    "The lefthand dog is angled rightward and on snow in front of hills, and the righthand dog has a hanging pink "
    "tongue and is not surrounded by snow.",
    "The right image contains one dog sitting on snow.",
    "One Malamute is standing in the green grass in front of some green trees.",
    "There is one dog on snow and one dog on grass.",
    "The left and right image contains a total of two lotion bottles.",
    "There are two bottles of lotion in total.",
    "An image contains multiple brown cylindrical bottles with black caps that have a colored circle on them, and "
    "at least one bottle is upright.",
    "The left image contains one black binder.",
    "The binder on the right is upright and empty with rings forward, and the binder on the left is lying open and "
    "flat, with paper on its right side.",
    "The left image contains at lest two white binders.",
    "In the image to the right, the sticker on the binder has no red.",
    "The right image shows at least one closed book with a circle containing a monogram on its patterned cover.",
    "At least one book in the image on the right has initials on it.",
    "The right image contains one glass bottle that is filled with small colorful candies.",
    "All the bowls contain sliced bananas.",
    "At least two bowls contain a sliced banana.",
    "there is 1 apple, 1 banana and one apple, the pear has a leaf on the stem",
    "The left image contains only pear and banana fruits, while the right image also includes a red apple.",
    "There are 1 or more fruit containers displaying fruit in them.",
    "there is a pineapple mixed with other fruits",
    "In at least one image there is a bowl with seven slices of both grapes and bananas.",
    "An image includes at least one orange-and-white puppy and a solid-orange puppy.",
    "There is exactly one brown and white puppy in each image",
    "There are puppies that are sleeping and ones that are awake.",
    "there are 3 dogs in the image pair",
    "One image contains a single hound with wavy black hair standing in profile on grass.",
    "An image contains at least two dogs.",
    "One image shows a hound with a light-colored coat standing on all fours with its body turned leftward, and the "
    "other image shows a hound with a distinctive beard.",
    "One of the dogs is standing in front of a tree.",
    "The left image contains exactly two dogs.",
]
PUBLISHED_SENTENCES = PAPER_FIGURE_1 + TEST_U_SAMPLE


def count(tokenizer, sentences) -> list[int]:
    return [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences]


def measure() -> dict:
    """Build both tokenizers (timed) and count every published sentence with each."""
    from utils import qwen2_vocab
    from utils.tiny_model import build_tokenizer

    t0 = time.perf_counter()
    qwen2_vocab.load_ranks()
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    qwen2_vocab.vocab_and_merges()
    t_merges = time.perf_counter() - t0
    t0 = time.perf_counter()
    real = qwen2_vocab.build_qwen2_tokenizer()
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    toy = build_tokenizer()
    t_toy = time.perf_counter() - t0
    out = {"sentences": len(PUBLISHED_SENTENCES), "words_mean": statistics.mean(len(s.split())
                                                                               for s in PUBLISHED_SENTENCES)}
    for name, tok in (("qwen2", real), ("toy", toy)):
        n = count(tok, PUBLISHED_SENTENCES)
        out[name] = {"vocab_tokens": len(tok), "mean": statistics.mean(n), "median": statistics.median(n),
                     "min": min(n), "max": max(n), "paper_figure_1": n[:2]}
    out["ratio_toy_to_qwen2"] = out["toy"]["mean"] / out["qwen2"]["mean"]
    out["seconds"] = {"read_ranks": t_read, "derive_merges": t_merges, "build_tokenizer": t_build,
                      "qwen2_total": t_read + t_merges + t_build, "toy_tokenizer": t_toy}
    return out


def format_table(r: dict) -> str:
    q, t, s = r["qwen2"], r["toy"], r["seconds"]
    lines = [f"{r['sentences']} published NLVR2 sentences (paper Figure 1 + test-U sample), {r['words_mean']:.1f} "
             f"words on average",
             f"{'vocabulary':<28}{'tokens':>8}{'mean':>8}{'median':>8}{'min':>6}{'max':>6}   Figure 1 sentences",
             f"{'Qwen2 (real, 151,643 BPE)':<28}{q['vocab_tokens']:>8,}{q['mean']:>8.1f}{q['median']:>8}{q['min']:>6}"
             f"{q['max']:>6}   {q['paper_figure_1']}",
             f"{'toy (local, CPU demo)':<28}{t['vocab_tokens']:>8,}{t['mean']:>8.1f}{t['median']:>8}{t['min']:>6}"
             f"{t['max']:>6}   {t['paper_figure_1']}",
             f"toy / real: {r['ratio_toy_to_qwen2']:.2f}x tokens",
             f"build: read ranks {s['read_ranks']:.2f} s + derive merges {s['derive_merges']:.2f} s + tokenizer "
             f"{s['build_tokenizer']:.2f} s = {s['qwen2_total']:.2f} s (toy BPE trained in {s['toy_tokenizer']:.2f} s)"]
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap


def main(argv=None):
    from bench import emit

    args = make_parser().parse_args(argv)
    r = measure()
    return emit({"benchmark": "sentence_tokens", **r}, format_table(r), args.json)


if __name__ == "__main__":
    from utils.cli import main_guard

    sys.exit(main_guard(main))
