"""The synthetic NLVR2's statement families as tasks of their own.

`nlvr2_synth` is the whole synthetic set; `nlvr2_synth_<family>` keeps one family
(grounding_left, grounding_right, count, compare, quantifier) and `nlvr2_synth_grounding` both
grounding families: the one-image statements a tiny model can learn on CPU in minutes (the CPU
smoke run). Rows, prompts, gold answers and parsing are NLVR2's; only the selection differs.

Version history: 1 - first definition.
                 2 - synthetic generator v2 (NLVR2's sets: a sentence over 3-4 image pairs) and slices v2
                     (NLVR2's semantic phenomena) (2026-12-02).
"""

from scoring.tasks import Task, register
from vlm_datasets.synthetic import FAMILIES, GROUNDING_FAMILIES


class _Families:
    """Keep the examples of some statement families. `field`/`wanted` name the rule when a source yields no
    example of them; `keep_row` tests a raw row's `family` column, so the eval decodes only the rows it keeps
    (`evals.feed`); the column is copied into `meta` unchanged (`vlm_datasets.nlvr2.normalise_row`)."""

    field = "family"

    def __init__(self, names):
        self.names = frozenset(names)
        self.wanted = sorted(self.names)

    def __call__(self, ex) -> bool:
        return (ex.meta or {}).get("family") in self.names

    def keep_row(self, column) -> bool:
        """`column(name)`: a raw row's value of that column."""
        return column("family") in self.names

    def __eq__(self, other):
        return isinstance(other, _Families) and other.names == self.names

    def __hash__(self):
        return hash(self.names)


def _families(names):
    return _Families(names)


register(Task(name="nlvr2_synth", version=2, description="synthetic NLVR2, every statement family",
              default_source="synthetic"))
register(Task(name="nlvr2_synth_grounding", version=2, default_source="synthetic", keep=_families(GROUNDING_FAMILIES),
              description="synthetic NLVR2, one-image statements ('The left image contains a red shape.')"))
for _family in FAMILIES:
    register(Task(name=f"nlvr2_synth_{_family}", version=2, default_source="synthetic", keep=_families([_family]),
                  description=f"synthetic NLVR2, statement family {_family}"))
