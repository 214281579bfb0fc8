"""Which groups an example is reported in: its synthetic family and keyword groups of its statement.

Keyword groups follow the phenomena NLVR2 is known for (Suhr et al. 2019): numbers, spatial
left/right, quantifiers over both images, comparatives, negation. They are cheap word matches on
the statement, so one statement can fall in several groups. Bump SLICES_VERSION (and the tasks'
versions) when the word lists change.
"""

from __future__ import annotations

import re

SLICES_VERSION = 1

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "single", "pair", "dozen", "exactly", "at least", "at most")
KEYWORDS: dict[str, tuple[str, ...]] = {
    "numbers": NUMBER_WORDS,
    "left_right": ("left", "right"),
    "both_each": ("both", "each", "every", "all", "either", "neither"),
    "comparative": ("more", "fewer", "less", "than", "same number", "as many", "larger", "smaller", "bigger",
                    "taller", "most", "least"),
    "negation": ("no", "not", "none", "neither", "nor", "without", "nothing", "n't"),
}
_PATTERNS = {name: re.compile(r"\b(" + "|".join(re.escape(w) for w in words if w != "n't") + r")\b"
                              + (r"|n't" if "n't" in words else "") + (r"|\d" if name == "numbers" else ""),
                              re.IGNORECASE)
             for name, words in KEYWORDS.items()}


def keyword_slices(sentence: str) -> list[str]:
    """`kw:<group>` for each keyword group the statement mentions."""
    return [f"kw:{name}" for name, pat in _PATTERNS.items() if pat.search(sentence)]


def default_slices(example) -> list[str]:
    """Family (synthetic set) + keyword groups; every example is also in `all` (added by metrics)."""
    out = []
    family = example.meta.get("family") if hasattr(example, "meta") else None
    if family:
        out.append(f"family:{family}")
    out += keyword_slices(example.sentence)
    return out
