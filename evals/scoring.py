"""Score mode: one forward pass on the prompt; the answer is whichever of True/False is more probable.

`p_true` is the probability of the True answer's first token, renormalised over the two answer
tokens, at the first answer position (right after the generation prompt). No text is generated or
parsed, so there are no invalid answers. Batches are left-padded, so the last position of every row
is its answer position; only that position's logits are computed (`logits_to_keep=1`).
"""

from __future__ import annotations

from typing import Iterable, Iterator

from vlm_datasets.prompts import answer_token_ids, build_inputs, get_template, render_prompt


def batched(items: Iterable, n: int) -> Iterator[list]:
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_prompts(processor, examples: list, template) -> dict:
    """Left-padded processor batch of the prompts (no answers) for `examples`."""
    inputs = [build_inputs(ex, template, with_answer=False) for ex in examples]
    texts = [render_prompt(processor, i) for i in inputs]
    old = processor.tokenizer.padding_side
    processor.tokenizer.padding_side = "left"
    try:
        return processor(text=texts, images=[i["images"] for i in inputs], return_tensors="pt", padding=True)
    finally:
        processor.tokenizer.padding_side = old


def model_device(model):
    try:
        return next(p.device for p in model.parameters())
    except StopIteration:
        import torch

        return torch.device("cpu")


def score_batch(model, processor, examples: list, template="tf") -> list[dict]:
    """Score one batch: `[{uid, p_true, prediction, visual_tokens}]` in input order."""
    import torch

    t = get_template(template)
    true_id, false_id = answer_token_ids(processor, t)
    enc = encode_prompts(processor, examples, t)
    image_token_id = model.config.image_token_id
    visual = (enc["input_ids"] == image_token_id).sum(-1).tolist()
    device = model_device(model)
    enc = {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.items()}
    with torch.no_grad():
        out = model(**enc, logits_to_keep=1, use_cache=False)
    pair = out.logits[:, -1, [true_id, false_id]].float().log_softmax(-1)
    p_true = pair[:, 0].exp().tolist()
    return [{"uid": ex.uid, "p_true": p, "prediction": p >= 0.5, "visual_tokens": v}
            for ex, p, v in zip(examples, p_true, visual)]


def score_examples(model, processor, examples: Iterable, template="tf", batch_size: int = 8) -> list[dict]:
    """Score every example (see `score_batch`); `model.eval()` is the caller's business."""
    out = []
    for batch in batched(examples, batch_size):
        out.extend(score_batch(model, processor, batch, template))
    return out


def accuracy_by(records: list[dict], examples: list, key=lambda ex: ex.meta.get("family", "all")) -> dict:
    """Accuracy and share predicted True per group (e.g. per statement family), plus 'all'."""
    groups: dict[str, list[tuple[bool, bool]]] = {}
    for r, ex in zip(records, examples):
        for g in (key(ex), "all"):
            groups.setdefault(g, []).append((r["prediction"], ex.label))
    return {g: {"n": len(v), "accuracy": sum(p == y for p, y in v) / len(v),
                "share_pred_true": sum(p for p, _ in v) / len(v)} for g, v in sorted(groups.items())}
