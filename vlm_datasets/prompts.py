"""Named, versioned prompt templates and THE function that turns an example into model input.

`build_inputs(example, template)` is the only place a prompt is made: training (TRL's
prompt/completion form), evaluation and the playground all call it, so their prompts cannot drift
apart. Bump a template's `version` whenever its text changes; results record name and version.
"""

from __future__ import annotations

from dataclasses import dataclass

from utils.errors import VLMStudiesError
# The pixel budget lives with the image code (utils/images.py); these names are part of the prompt API too.
from utils.images import (LAB_MAX_PIXELS, LAB_MIN_PIXELS, PIXEL_UNIT, pixel_budget, processor_pixel_limits,  # noqa: F401
                          set_pixel_limits)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    text: str  # formatted with {sentence}; placed after the two images
    picture_ids: bool = False  # label the images "Picture 1: " / "Picture 2: " (Qwen2-VL's add_vision_id format)
    answer_true: str = "True"
    answer_false: str = "False"
    description: str = ""

    @property
    def tag(self) -> str:
        return f"{self.name}@v{self.version}"

    def answer(self, label: bool) -> str:
        return self.answer_true if label else self.answer_false


TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in [
    PromptTemplate("tf", 1, "{sentence}\nAnswer True or False.",
                   description="the statement, then 'Answer True or False.'"),
    PromptTemplate("tf_picture_ids", 1, "Picture 1 is the left image and Picture 2 is the right image.\n"
                   "{sentence}\nAnswer True or False.", picture_ids=True,
                   description="as tf, with the images labelled 'Picture 1: '/'Picture 2: ' and mapped to left/right"),
    PromptTemplate("terse", 1, "{sentence} True or False?", description="statement and a two-word question"),
]}
DEFAULT_TEMPLATE = "tf"


def get_template(name: str | PromptTemplate) -> PromptTemplate:
    if isinstance(name, PromptTemplate):
        return name
    base = name.split("@")[0]
    if base not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(base, TEMPLATES, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise VLMStudiesError(f"unknown prompt template '{name}'{hint}; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[base]


def user_content(sentence: str, n_images: int, template: PromptTemplate) -> list[dict]:
    content = []
    for i in range(n_images):
        if template.picture_ids:
            content.append({"type": "text", "text": f"Picture {i + 1}: "})
        content.append({"type": "image"})
    content.append({"type": "text", "text": template.text.format(sentence=sentence)})
    return content


def build_inputs(example, template: str | PromptTemplate = DEFAULT_TEMPLATE, with_answer: bool = True) -> dict:
    """Model input for one example in TRL's conversational prompt/completion form.

    Returns `{"images": [left, right], "prompt": [user turn], "completion": [assistant turn]}`
    (no completion when `with_answer` is false). Images come first, left then right, as in NLVR2.
    """
    t = get_template(template)
    images = list(example.images) if hasattr(example, "images") else [example["left"], example["right"]]
    sentence = example.sentence if hasattr(example, "sentence") else example["sentence"]
    out = {"images": images, "prompt": [{"role": "user", "content": user_content(sentence, len(images), t)}]}
    if with_answer:
        label = example.label if hasattr(example, "label") else example["label"]
        out["completion"] = [{"role": "assistant", "content": [{"type": "text", "text": t.answer(label)}]}]
    return out


def render_prompt(processor, inputs: dict) -> str:
    """The prompt text exactly as the model sees it before the answer (generation prompt included)."""
    return processor.apply_chat_template(inputs["prompt"], tokenize=False, add_generation_prompt=True)


def answer_token_ids(processor, template: str | PromptTemplate = DEFAULT_TEMPLATE) -> tuple[int, int]:
    """Ids of the True and False answers, as they follow the generation prompt: ONE token each.

    Score mode compares these two at the first answer position, which is exact only when each answer
    is a single token (with Qwen2's vocabulary "True" is 2514 and "False" 4049, Setup/NOTES.md §6); an
    answer the tokenizer splits would be scored on its first piece alone, so it is refused. They must differ.
    """
    t = get_template(template)
    tok = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    ids = []
    for answer in (t.answer_true, t.answer_false):
        pieces = tok(answer, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            shown = " + ".join(repr(tok.decode([i])) for i in pieces) or "nothing"
            raise VLMStudiesError(f"template {t.tag}: answer '{answer}' is {len(pieces)} tokens ({shown}) in this "
                                  f"tokenizer; score mode needs each answer to be one token: choose an answer word "
                                  f"the vocabulary holds whole (True/False, Yes/No)")
        ids.append(pieces[0])
    if ids[0] == ids[1]:
        raise VLMStudiesError(f"template {t.tag}: answers '{t.answer_true}' and '{t.answer_false}' are the same "
                              f"token; scoring needs two distinct tokens")
    return ids[0], ids[1]


def count_visual_tokens(width: int, height: int, min_pixels: int, max_pixels: int, patch_size: int = 14,
                        merge_size: int = 2) -> int:
    """Visual tokens one image costs in Qwen2-VL after its resize (one per 28x28 area by default)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = patch_size * merge_size
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // factor) * (w // factor)


def budget_record(min_pixels: int | None, max_pixels: int | None, given_by: str = "config") -> dict:
    """What a run records about its pixel budget: the bounds, the most visual tokens one image can cost,
    and where the bounds came from (`given_by` when set, else the lab default)."""
    lo, hi = pixel_budget(min_pixels, max_pixels)
    src = given_by if (min_pixels and max_pixels) else "lab default" if not (min_pixels or max_pixels) else \
        f"{given_by} + lab default"
    return {"min_pixels": lo, "max_pixels": hi, "max_visual_tokens_per_image": hi // PIXEL_UNIT, "from": src}
