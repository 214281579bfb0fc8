"""One batched look at a few examples: occlusion, logit lens and attention from a single forward pass.

Each example goes in five times (`occlusion.VARIANTS`: original, left / right / both replaced, swapped),
left-padded into one score-mode batch (`scoring.modes.encode_prompts` + `score_encoded`), so every
P(True) here is exactly score mode's. On the original's rows the recorders of `capture` also keep the
answer position's attention row per layer and hidden state per layer (logit lens).
"""

from __future__ import annotations

from scoring.capture import (attention_shares, language_model, lens_p_true, unwrap, visual_layout, AnswerRowAttention,
                             LastPositionStates)
from scoring.occlusion import variants, VARIANTS
from vlm_datasets.prompts import answer_token_ids, get_template
from scoring.modes import encode_prompts, score_encoded


def prepare(processor, examples: list, template="tf", occluder: str = "mean") -> tuple[list, dict]:
    """`(inputs, encoded batch)`: the five variants of each example, left-padded for score mode. Encoded
    once, it serves every model state (adapter on and off)."""

    flat = [v for ex in examples for v in variants(ex, occluder)]
    return flat, encode_prompts(processor, flat, template)


def look_batch(model, processor, examples: list, template="tf", occluder: str = "mean", record: bool = True,
               detail: bool = False, per_head: bool = False, prepared: tuple | None = None) -> list[dict]:
    """Per example: `p_true` per variant; with `record`, the logit lens (`lens`: p_true and answer mass per
    layer, embeddings first) and attention `shares` per layer (left / right / text, mean over heads); with
    `detail`, the layout of the visual tokens and the attention on each image cell per layer (`cells`), and
    with `per_head` the same per head (`head_shares`, `head_cells`). The model's train/eval mode is the
    caller's business (score mode's convention)."""

    t = get_template(template)
    flat, enc = prepared or prepare(processor, examples, t, occluder)
    keep = [i * len(VARIANTS) for i in range(len(examples))]
    if not record:
        scores = score_encoded(model, processor, flat, enc, t)
        return [{"uid": ex.uid, "p_true": _by_variant(scores, i)} for i, ex in enumerate(examples)]

    with AnswerRowAttention(model, keep_rows=keep) as att, LastPositionStates(model) as states:
        scores = score_encoded(model, processor, flat, enc, t)
    true_id, false_id = answer_token_ids(processor, t)
    lens, mass = lens_p_true(model, states.states()[keep], true_id, false_id)
    rows = att.stacked()  # (examples, layers, heads, keys), float32 on the CPU
    base = unwrap(model)
    merge = int(base.config.vision_config.spatial_merge_size)
    patch = int(getattr(processor.image_processor, "patch_size", 14) or 14)
    layout = visual_layout(enc["input_ids"], enc["image_grid_thw"], base.config.image_token_id, merge, patch)
    out = []
    for i, ex in enumerate(examples):
        images = layout[keep[i]]
        mean_rows = rows[i].mean(1)  # (layers, keys): mean over heads
        r = {"uid": ex.uid, "p_true": _by_variant(scores, i), "lens": {"p_true": lens[i], "answer_mass": mass[i]},
             "shares": [attention_shares(mean_rows[layer], images) for layer in range(mean_rows.shape[0])]}
        if detail:
            r["layout"] = [{"side": im.side, "grid": list(im.grid), "resized": list(im.resized), "cell": im.cell,
                            "size": list(img.size), "positions": im.positions} for im, img in zip(images, ex.images)]
            r["cells"] = [{im.side: im.as_grid(mean_rows[layer, im.positions].tolist()) for im in images}
                          for layer in range(mean_rows.shape[0])]
            r["keys"] = int(rows.shape[-1])
            r["heads"] = int(rows.shape[2])
            if per_head:
                r["head_shares"] = [[attention_shares(rows[i, layer, h], images) for h in range(rows.shape[2])]
                                    for layer in range(rows.shape[1])]
                r["head_cells"] = [[{im.side: im.as_grid(rows[i, layer, h, im.positions].tolist()) for im in images}
                                    for h in range(rows.shape[2])] for layer in range(rows.shape[1])]
        out.append(r)
    return out


def _by_variant(scores: list[dict], i: int) -> dict:
    return {v: s["p_true"] for v, s in zip(VARIANTS, scores[i * len(VARIANTS):(i + 1) * len(VARIANTS)])}


def layer_count(model) -> int:
    return len(language_model(model).layers)
