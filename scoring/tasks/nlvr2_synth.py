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


def _families(names):
    names = frozenset(names)

    def keep(ex):
        return ex.meta.get("family") in names

    keep.field, keep.wanted = "family", sorted(names)  # named when a source yields no example of them
    return keep


register(Task(name="nlvr2_synth", version=2, description="synthetic NLVR2, every statement family",
              default_source="synthetic"))
register(Task(name="nlvr2_synth_grounding", version=2, default_source="synthetic", keep=_families(GROUNDING_FAMILIES),
              description="synthetic NLVR2, one-image statements ('The left image contains a red shape.')"))
for _family in FAMILIES:
    register(Task(name=f"nlvr2_synth_{_family}", version=2, default_source="synthetic", keep=_families([_family]),
                  description=f"synthetic NLVR2, statement family {_family}"))
