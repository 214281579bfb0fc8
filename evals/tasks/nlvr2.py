"""NLVR2: is a statement about a pair of photographs (left, right) true?

Input: the two images, left then right, and the statement, through the shared prompt builder.
Gold: the row's label. Score mode compares the template's True/False answer tokens; generate mode
parses the response with `evals.parser.parse_answer`. Slices: keyword groups of the statement
(numbers, left/right, both/each, comparatives, negation) and, on the synthetic set, its family.
Pixel budget when a run sets none: the lab default, min_pixels 4*28*28 and max_pixels 512*28*28
(`vlm_datasets.prompts.LAB_MIN_PIXELS` / `LAB_MAX_PIXELS`): at most 512 visual tokens per photo, ~988
for a pair of 1024x768 photos, instead of the processor's own 16384*28*28 (Setup/NOTES.md §2).

Version history: 1 - first definition (parser v1, keyword slices v1).
"""

from evals.tasks import Task, register

NLVR2 = register(Task(
    name="nlvr2",
    version=1,
    description="NLVR2 statement about an image pair, True/False (validation = NLVR2 dev)",
    default_source="pingzhili/nlvr2",
))
