"""Which slices an example is reported in: its synthetic family, and the semantic phenomena of its statement.

The phenomena are the ones NLVR2's paper analyses in its corpus (Suhr et al. 2019, the linguistic
analysis of sentences): hard and soft cardinality, existential and universal quantifiers,
coordination, coreference, spatial relations, comparatives, presupposition and negation. Each is a
documented word rule below, not a parse: HEURISTIC, with misses and false hits, and the report says
so. A statement can be in several slices (`ling:<phenomenon>`), or in none.

How the rules avoid the artefacts of plain keyword matching on NLVR2's sentences:

1. Phrases about the two photographs themselves are replaced by a marker first, so they are not read
   as content: "the left image" / "the image on the right" / "on the left" only NAME a panel (not a
   spatial relation); "one of the images" / "at least one image" / "either image" quantify
   existentially over the panels (not cardinality); "both images" / "each image" universally; "exactly
   one image" counts panels (hard cardinality); "neither image" / "none of the images" negate.
2. Bounded counts are read as one unit, then removed before the other rules run: "at least two",
   "at most three", "more than one", "no more than two", "two or more", "several" are soft
   cardinality; so the "more" / "least" / "most" inside them is not a comparative, and the "no" /
   "not" of "no more than two" is not negation (it is the bound "at most two" in other words; a model
   that fails it fails at counting). "at least one X" is existential (it asserts that an X exists),
   not a count.
3. Then each phenomenon has its own word rule on what is left (see the patterns and their comments).

Bump SLICES_VERSION (and the versions of the tasks in scoring/tasks/ that use these slices) whenever a
rule changes, so numbers from different slice definitions are never mixed. Precision and recall are
checked in tests/test_slices.py on a table of NLVR2-style sentences labelled by hand.
"""

from __future__ import annotations

import re

SLICES_VERSION = 2  # 2: NLVR2's semantic phenomena (word rules, panel phrases masked); 1: keyword groups

PHENOMENA = ("cardinality_hard", "cardinality_soft", "existential", "universal", "coordination", "coreference",
             "spatial", "comparative", "presupposition", "negation")

# --------------------------------------------------------------------------- vocabulary

_NUMBER = (r"(?:\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
           r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|hundred|a\s+dozen|dozen|"
           r"a\s+single)")
_PANEL = r"(?:images?|pictures?|photos?|photographs?|pics?|panels?)"  # what NLVR2 writers call the two photos
_SIDE = r"(?:left|right)(?:[\s-]hand)?(?:\s+side)?"
_NOT_OF = r"(?![\s-]*(?:hand|side|of)\b)"  # "the left side of the bowl" is a position, not the panel

# Panel phrases, most specific first; each becomes a marker the rules below can read.
_PANEL_PHRASES = [
    # counting panels: "exactly one image", "only one of the pictures"  -> hard cardinality
    ("PANELEXACT", rf"\b(?:exactly|only|just)\s+one\s+(?:of\s+the\s+(?:two\s+)?)?{_PANEL}\b"),
    # existential over panels: "at least one image", "one of the images", "either picture", "in one image"
    ("PANELSOME", rf"\b(?:at\s+least\s+)?one\s+(?:of\s+the\s+(?:two\s+)?)?{_PANEL}\b"),
    ("PANELSOME", rf"\beither\s+(?:of\s+the\s+(?:two\s+)?)?{_PANEL}\b"),
    # negated: "neither image", "none of the pictures", "no image"
    ("PANELNONE", rf"\b(?:neither|none)\s+(?:of\s+the\s+(?:two\s+)?)?{_PANEL}\b"),
    ("PANELNONE", rf"\bno\s+{_PANEL}\b"),
    # universal over panels: "both images", "each picture", "all of the photos", "the left and right images"
    ("PANELALL", rf"\b(?:both|each|every|all)\s+(?:of\s+)?(?:the\s+)?(?:two\s+)?{_PANEL}\b"),
    ("PANELALL", rf"\b(?:the\s+)?(?:left|right)\s+and\s+(?:the\s+)?(?:left|right)\s+{_PANEL}\b"),
    # naming one panel: "the left image", "the image on the right", "the right-hand photo"
    ("PANEL", rf"\b(?:the\s+)?{_SIDE}\s+{_PANEL}\b"),
    ("PANEL", rf"\b(?:the\s+)?{_PANEL}\s+(?:on|to|at|from)\s+the\s+{_SIDE}\b{_NOT_OF}"),
    ("PANEL", r"\bthe\s+(?:left|right|other)\s+one\b"),
    # "the other" standing for the other photo: "one image shows a dog and the other shows a cat"
    ("PANEL", r"\bthe\s+other\b(?=\s+(?:shows?|has|have|contains?|features?|depicts?|displays?|includes?|is|does)\b)"),
    # the elliptic "on the left" / "in the right": NLVR2 writers use it for the panel; "on the left
    # of the dog" / "left side of the bowl" stay, for the spatial rule
    ("PANEL", rf"\b(?:on|in|at)\s+the\s+{_SIDE}\b{_NOT_OF}"),
    # any other mention of the photos: "the other image", "the two pictures", "the image pair"
    ("PANEL", rf"\b(?:the\s+|these\s+|those\s+|this\s+|that\s+|an?\s+)?(?:other\s+|two\s+|first\s+|second\s+)?"
              rf"{_PANEL}(?:\s+pair)?\b"),
    ("PANEL", r"\b(?:the\s+)?(?:image\s+)?pair\s+of\s+images\b|\bthe\s+pair\b"),
]
_PANEL_PATTERNS = [(marker, re.compile(p)) for marker, p in _PANEL_PHRASES]

# Soft cardinality: a bounded or vague count, matched as a unit and then removed (see the docstring).
_SOFT = re.compile("|".join([
    rf"\b(?:no|not)\s+(?:more|fewer|less|greater)\s+than\s+{_NUMBER}\b",  # = at most / at least N
    rf"\bat\s+least\s+(?!one\b){_NUMBER}\b",                             # "at least one" is existential
    rf"\bat\s+most\s+{_NUMBER}\b",
    rf"\b(?:more|fewer|less)\s+than\s+{_NUMBER}\b",                      # "more than one" = two or more
    rf"\b{_NUMBER}\s+or\s+(?:more|fewer|less|greater)\b",
    rf"\b(?:up\s+to|over|under|around|about|approximately|roughly|nearly|almost)\s+{_NUMBER}\b",
    # vague amounts and proportions; "as many/few as" is an equality comparison, "the most" a superlative,
    # "at most" needs a number (above)
    r"\b(?:several|multiple|numerous|a\s+few|a\s+couple(?:\s+of)?|a\s+number\s+of|a\s+lot\s+of|lots\s+of|"
    r"plenty\s+of|a\s+group\s+of|a\s+bunch\s+of|dozens\s+of|hundreds\s+of|half\s+of)\b",
    r"(?<!\bas\s)\b(?:many|few)\b",
    r"(?<!\bat\s)(?<!\bthe\s)\bmost\b",
]))

_RULES: dict[str, list[str]] = {
    # An exact count of things (or of panels): a numeral not inside a soft count, "exactly/only/just N",
    # "a single". "one" counts only as a determiner ("one dog"), not as a pronoun ("the one on the
    # left", "each one"), in "one of the X" (existential partitive) or "one another" (reciprocal).
    "cardinality_hard": [
        r"PANELEXACT",
        rf"\b(?:exactly|precisely|only|just)\s+{_NUMBER}\b",
        r"\ba\s+single\b",
        r"\b(?:\d+|zero|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
        r"sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|hundred|dozen)\b",
        r"(?<!\bthe\s)(?<!\bthis\s)(?<!\bthat\s)(?<!\beach\s)(?<!\bevery\s)(?<!\bany\s)(?<!\bno\s)(?<!\bwhich\s)"
        r"(?<!\bother\s)(?<!\bleast\s)\bone\b(?!\s+(?:of|another)\b)(?=\s+[a-z])",
    ],
    "cardinality_soft": [],  # the _SOFT units above
    # Existence asserted: the existential "there is/are", "exist(s)", "some", "at least one", the
    # partitive "one of the X", and existential quantification over panels ("one of the images").
    # Plain indefinites ("a dog") would put nearly every sentence here, so they do not count.
    "existential": [
        r"PANELSOME",
        r"\bthere\s+(?:is|are|was|were|exists?|appears?\s+to\s+be|seems?\s+to\s+be)\b|\bthere's\b",
        r"\bexists?\b",
        r"\bsome\b",
        r"\bat\s+least\s+one\b",
        r"\bone\s+of\s+(?:the|these|those|its|their)\b",
    ],
    # Universal quantification: all / every / each (not the reciprocal "each other"), "both" (not the
    # correlative "both a X and a Y", which is coordination), and "both images" / "each image".
    "universal": [
        r"PANELALL",
        r"\b(?:all|every|everything|everyone|always)\b",
        r"\beach\b(?!\s+other\b)",
        r"\bboth\b(?!\s+(?:a|an)\b)",
    ],
    # Coordinated phrases or clauses. "or more" / "or fewer" belong to a soft count (removed before),
    # "black and white" is one colour term, and "the left and right images" names both panels.
    "coordination": [
        r"\b(?:and|or|nor|but)\b(?<!\bblack\sand)",
        r"\bas\s+well\s+as\b",
    ],
    # Anaphora: personal and possessive pronouns referring back, and reciprocals.
    "coreference": [
        r"\b(?:it|its|itself|they|them|their|theirs|themselves|he|him|his|himself|she|her|hers|herself)\b",
        r"\beach\s+other\b|\bone\s+another\b",
    ],
    # Where things are relative to each other (or inside the photo), and which way they face. Not the
    # panel names (masked). "on" and "in" count only with a following determiner, which leaves out "in
    # total", "in focus", "on display".
    "spatial": [
        rf"\b(?:to|on|at)\s+the\s+{_SIDE}\s+of\b|\b(?:left|right)\s+of\b|\b(?:leftmost|rightmost)\b",
        r"\b(?:upper|lower|top|bottom)[\s-](?:left|right)\b",
        r"\b(?:above|below|beneath|underneath|behind|beside|between|among|amongst|inside|into|within|outside|"
        r"atop|against|across|opposite|alongside|along|beyond|around|surrounding|surrounded|touching|touches|"
        r"near|nearby|facing|faces|toward|towards)\b",
        r"\b(?:under|over)\b(?!\s+" + _NUMBER + r"\b)",
        r"\bnext\s+to\b|\bclose\s+to\b|\bin\s+front\s+of\b|\bin\s+back\s+of\b|\bon\s+top\s+of\b|\baway\s+from\b",
        r"\bin\s+the\s+(?:middle|center|centre|background|foreground|corner)\b",
        # "on" / "in" with a following determiner: "on a bench", "on its back", "in a box", "in the water"
        # (the panels were masked before, so "in the left image" is not here)
        r"\b(?:on|in)\s+(?:a|an|the|its|their|his|her|some|top)\b",
    ],
    # Comparison between quantities or degrees: "than" (not "rather/other than"; "more than two" was
    # removed as a soft count), more / fewer / less, comparative and superlative adjectives, "as many
    # as", equality and difference ("the same number", "different"), "twice".
    "comparative": [
        r"(?<!\brather\s)(?<!\bother\s)\bthan\b",
        r"\b(?:more|fewer|less)\b",
        r"\bas\s+(?:many|much|few|little|big|small|large|tall|long|short|wide|high|close|far|old|young)\b",
        r"\b(?:bigger|larger|smaller|taller|shorter|longer|wider|higher|closer|further|farther|older|younger|"
        r"darker|lighter|brighter|heavier|thicker|thinner|greater)\b",
        r"\bthe\s+(?:most|least|fewest)\b",
        r"\b(?:biggest|largest|smallest|tallest|shortest|longest|highest|lowest|closest|farthest|furthest|oldest|"
        r"youngest|darkest|lightest|brightest|heaviest|widest)\b",
        r"\b(?:same|different|differently|identical|equal|equally|similar|twice|double)\b",
    ],
    # Presupposed content: a definite description of something in the scene ("the dog", "the water":
    # its existence is taken for granted), and the triggers "only" (not "only two"), "also", "another",
    # "again", "still". Not "the" + a panel (masked), a position, "the same", "the number", "the camera".
    "presupposition": [
        r"\bthe\s+(?!(?:same|number|amount|total|left|right|top|bottom|middle|center|centre|front|back|side|sides|"
        r"background|foreground|edge|edges|corner|camera|viewer|most|least|fewest|pair|way|rest)\b)[a-z]",
        rf"\bonly\b(?!\s+(?:{_NUMBER})\b)",
        r"\b(?:also|another|again|still)\b",
    ],
    # Negation: not / n't / never / no / none / nothing / neither / nor / without, and "neither image".
    # The "no"/"not" of "no more than two" was removed with its soft count.
    "negation": [
        r"PANELNONE",
        r"\b(?:not|never|no|none|nobody|nothing|nowhere|neither|nor|without|cannot)\b",
        r"n't\b",
    ],
}
_COMPILED = {name: [re.compile(p) for p in pats] for name, pats in _RULES.items()}


def _normalise(sentence: str) -> str:
    s = sentence.lower().replace("\u2019", "'").replace("\u2018", "'")
    return " " + re.sub(r"\s+", " ", s).strip() + " "


def mask_panels(sentence: str) -> str:
    """The lower-cased statement with phrases about the photos themselves replaced by markers (step 1)."""
    s = _normalise(sentence)
    for marker, pat in _PANEL_PATTERNS:
        s = pat.sub(f" {marker} ", s)
    return s


def phenomena(sentence: str) -> list[str]:
    """The semantic phenomena (PHENOMENA order) a statement shows, by the word rules above."""
    masked = mask_panels(sentence)
    found = set()
    if _SOFT.search(masked):
        found.add("cardinality_soft")
    rest = _SOFT.sub(" QTY ", masked)  # step 2: soft counts read, then out of the way
    for name, pats in _COMPILED.items():
        if any(p.search(rest) for p in pats):
            found.add(name)
    return [p for p in PHENOMENA if p in found]


def linguistic_slices(sentence: str) -> list[str]:
    """`ling:<phenomenon>` for each phenomenon of the statement."""
    return [f"ling:{p}" for p in phenomena(sentence)]


def default_slices(example) -> list[str]:
    """Family (synthetic set) + linguistic phenomena; every example is also in `all` (added by metrics)."""
    out = []
    family = example.meta.get("family") if hasattr(example, "meta") else None
    if family:
        out.append(f"family:{family}")
    out += linguistic_slices(example.sentence)
    return out
