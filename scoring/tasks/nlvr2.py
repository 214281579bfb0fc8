"""NLVR2: is a statement about a pair of photographs (left, right) true?

Input: the two images, left then right, and the statement, through the shared prompt builder.
Gold: the row's label. Score mode compares the template's True/False answer tokens; generate mode
parses the response with `scoring.parser.parse_answer`. Slices: the semantic phenomena of the statement
(`scoring.slices`: cardinality, quantifiers, coordination, coreference, spatial relations, comparatives,
presupposition, negation; heuristic word rules) and, on the synthetic set, its family. Consistency is
NLVR2's own (`scoring.metrics.consistency`).
Pixel budget when a run sets none: the lab default, min_pixels 4*28*28 and max_pixels 512*28*28
(`vlm_datasets.prompts.LAB_MIN_PIXELS` / `LAB_MAX_PIXELS`): at most 512 visual tokens per photo, ~988
for a pair of 1024x768 photos, instead of the processor's own 16384*28*28 (Setup/NOTES.md §2).

Version history: 1 - first definition (parser v1, keyword slices v1).
                 2 - slices v2: NLVR2's semantic phenomena instead of keyword groups (2026-12-02).
"""

from scoring.tasks import Task, register

NLVR2 = register(Task(
    name="nlvr2",
    version=2,
    description="NLVR2 statement about an image pair, True/False (validation = NLVR2 dev)",
    default_source="pingzhili/nlvr2",
))
