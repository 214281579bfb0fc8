"""VSR (Visual Spatial Reasoning): is a caption about two objects' spatial relation in ONE image true?

Input: the image, then the caption, through the shared prompt builder (one image instead of
NLVR2's two; the caption takes the statement's place, so the same templates apply). Templates
that name two pictures (`tf_picture_ids`) are refused: their text would describe images that are
not there. Gold: the row's label (1 = True). Slices: the caption's relation (`relation:left of`, ...).
Consistency: VSR has no groups of statements, so every example is its own group (consistency =
accuracy).

`vsr` reads `cambridgeltl/vsr_random` (or a local copy in its schema; images from COCO, see
`vlm_datasets.vsr`), `vsr_zeroshot` the zero-shot split copy (`cambridgeltl/vsr_zeroshot`: relations
are disjoint across its splits), `vsr_synth` the synthetic VSR-schema set of rendered shapes.

Version history: 1 - first definition.
"""

from scoring.tasks import register, Task
from utils.errors import VLMStudiesError
from vlm_datasets.prompts import build_inputs, get_template
from vlm_datasets.vsr import load_vsr


def _vsr_rows(source, split, mode, root=None, limit=None, on_error="skip", min_pixels=None, max_pixels=None):
    return load_vsr(source, split, mode, root=root, limit=limit, on_error=on_error, min_pixels=min_pixels,
                    max_pixels=max_pixels)


def _inputs(example, template):
    t = get_template(template)
    if t.picture_ids:
        raise VLMStudiesError(f"template {t.tag} speaks of two pictures (left and right); VSR has one image: use tf "
                              f"or terse")
    return build_inputs(example, t, with_answer=False)


def _slices(example):
    relation = (example.meta or {}).get("relation")
    return [f"relation:{relation}"] if relation else []


def _vsr_task(name, source, description):
    return register(Task(name=name, version=1, description=description, default_source=source,
                         default_split="validation", to_inputs=_inputs, slices=_slices, load_rows=_vsr_rows,
                         dataset="vsr"))


VSR = _vsr_task("vsr", "cambridgeltl/vsr_random",
                "VSR random split: caption about two objects' spatial relation in one COCO image, True/False")
_vsr_task("vsr_zeroshot", "cambridgeltl/vsr_zeroshot", "VSR zero-shot split (relations disjoint across splits)")
_vsr_task("vsr_synth", "synthetic", "synthetic VSR: 'The red circle is left of the blue square.' on rendered shapes")
