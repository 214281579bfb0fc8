"""NLVR2: is a statement about a pair of photographs (left, right) true?

Input: the two images, left then right, and the statement, through the shared prompt builder.
Gold: the row's label. Score mode compares the template's True/False answer tokens; generate mode
parses the response with `evals.parser.parse_answer`. Slices: keyword groups of the statement
(numbers, left/right, both/each, comparatives, negation) and, on the synthetic set, its family.

Version history: 1 - first definition (parser v1, keyword slices v1).
"""

from evals.tasks import Task, register

NLVR2 = register(Task(
    name="nlvr2",
    version=1,
    description="NLVR2 statement about an image pair, True/False (validation = NLVR2 dev)",
    default_source="pingzhili/nlvr2",
))
