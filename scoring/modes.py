"""The two answer modes, batched, with one record shape.

Score mode (`score_batch`): one forward pass on the prompt; the answer is whichever of True/False
is more probable. `p_true` is the probability of the True answer's first token, renormalised over
the two answer tokens, at the first answer position (right after the generation prompt). No text
is generated or parsed, so there are no invalid answers. Batches are left-padded, so the last
position of every row is its answer position; only that position's logits are computed
(`logits_to_keep=1`).

Generate mode (`generate_batch`): batched greedy generation with left padding; the response is
parsed (`scoring.parser.parse_answer` by default) into True/False or invalid. The logits of the
first generated token are the score-mode logits, so `p_true` is recorded here too. The decoding
settings are the lab's (`generation_config`), whatever the checkpoint's generation_config.json says.

Both take `to_inputs(example, template)` (a task's prompt builder; default
`vlm_datasets.prompts.build_inputs`), so a registered task decides what the model sees.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from utils.generation import decoding_config
from vlm_datasets.prompts import answer_token_ids, build_inputs, get_template, render_prompt
from scoring.parser import parse_answer

# Prompts are left-padded, so in every row of a batch the last position is the first answer position.
ANSWER_POSITION = -1


def batched(items: Iterable, n: int) -> Iterator[list]:
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _default_inputs(example, template):
    return build_inputs(example, template, with_answer=False)


def encode_prompts(processor, examples: list, template, to_inputs=None) -> dict:
    """Left-padded processor batch of the prompts (no answers) for `examples`."""
    inputs = [(to_inputs or _default_inputs)(ex, template) for ex in examples]
    texts = [render_prompt(processor, i) for i in inputs]
    old = processor.tokenizer.padding_side
    processor.tokenizer.padding_side = "left"
    try:
        return processor(text=texts, images=[i["images"] for i in inputs], return_tensors="pt", padding=True)
    finally:
        processor.tokenizer.padding_side = old


def collate_encoded(processor, encs: list[dict]) -> dict:
    """One left-padded batch from prompts encoded one by one (`encode_prompts(processor, [ex], ...)` each).

    Equal, tensor for tensor, to `encode_prompts` on the whole batch (tests/test_eval_feed.py): the
    tokenizer encodes each text on its own and pads on the left with the pad id (mask and token types 0),
    and the image processor treats each image on its own, so pixel rows and grids are concatenated in
    order. This lets DataLoader workers run the processor example by example (`evals.feed`).
    """
    import torch

    if len(encs) == 1:
        return dict(encs[0])
    seq = {k for k, v in encs[0].items() if hasattr(v, "shape") and v.shape == encs[0]["input_ids"].shape}
    length = max(e["input_ids"].shape[1] for e in encs)
    pad_id = processor.tokenizer.pad_token_id
    out = {}
    for k in encs[0]:
        if k in seq:
            fill = pad_id if k == "input_ids" else 0
            out[k] = torch.cat([torch.nn.functional.pad(e[k], (length - e[k].shape[1], 0), value=fill) for e in encs])
        else:
            out[k] = torch.cat([e[k] for e in encs])
    return out


def p_true_from_logits(logits, true_id: int, false_id: int):
    """P(True) renormalised over the two answer tokens, from logits `(..., vocab)` at the answer position.

    The one definition of score mode's p_true: eval, generate mode's first token, and the look-inside
    views (occlusion, logit lens) all read it here.
    """
    return logits[..., [true_id, false_id]].float().log_softmax(-1)[..., 0].exp()


def model_device(model):
    try:
        return next(p.device for p in model.parameters())
    except StopIteration:
        import torch

        return torch.device("cpu")


def score_batch(model, processor, examples: list, template="tf", to_inputs=None) -> list[dict]:
    """Score one batch: `[{uid, p_true, prediction, visual_tokens}]` in input order."""
    t = get_template(template)
    return score_encoded(model, processor, examples, encode_prompts(processor, examples, t, to_inputs), t)


def score_encoded(model, processor, examples: list, enc: dict, template="tf") -> list[dict]:
    """`score_batch` on a batch already encoded by `encode_prompts` (callers that also read the tokens)."""
    import torch

    true_id, false_id = answer_token_ids(processor, get_template(template))
    visual = (enc["input_ids"] == model.config.image_token_id).sum(-1).tolist()
    device = model_device(model)
    enc = {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.items()}
    with torch.inference_mode():  # no autograd bookkeeping at all (no_grad still tracks versions/views)
        out = model(**enc, logits_to_keep=1, use_cache=False)
    p_true = p_true_from_logits(out.logits[:, ANSWER_POSITION], true_id, false_id).tolist()
    return [{"uid": ex.uid, "p_true": p, "prediction": p >= 0.5, "visual_tokens": v}
            for ex, p, v in zip(examples, p_true, visual)]


def score_examples(model, processor, examples: Iterable, template="tf", batch_size: int = 8,
                   to_inputs=None) -> list[dict]:
    """Score every example (see `score_batch`); `model.eval()` is the caller's business."""
    out = []
    for batch in batched(examples, batch_size):
        out.extend(score_batch(model, processor, batch, template, to_inputs))
    return out


def generation_config(processor, max_new_tokens: int):
    """The lab's decoding for generate mode: greedy, `max_new_tokens`, no repetition penalty, eos =
    `<|im_end|>` and `<|endoftext|>`; nothing from the checkpoint's generation_config.json (utils.generation)."""
    return decoding_config(processor.tokenizer, max_new_tokens, output_logits=True, return_dict_in_generate=True)


def generate_batch(model, processor, examples: list, template="tf", max_new_tokens: int = 16, parse=None,
                   to_inputs=None) -> list[dict]:
    """Greedy-generate answers for one left-padded batch and parse them (decoding: `generation_config`).

    Returns `[{uid, raw_output, prediction, valid, parse_reason, stopped, p_true, visual_tokens}]`:
    `prediction` is None when the answer is invalid; `stopped` is False when the answer ran into
    `max_new_tokens` without ending (a cut answer is then parsed as it stands).
    """
    t = get_template(template)
    return generate_encoded(model, processor, examples, encode_prompts(processor, examples, t, to_inputs), t,
                            max_new_tokens, parse)


def generate_encoded(model, processor, examples: list, enc: dict, template="tf", max_new_tokens: int = 16,
                     parse=None) -> list[dict]:
    """`generate_batch` on a batch already encoded (`encode_prompts`, or `collate_encoded` of single ones)."""
    import torch


    parse = parse or parse_answer
    t = get_template(template)
    true_id, false_id = answer_token_ids(processor, t)
    visual = (enc["input_ids"] == model.config.image_token_id).sum(-1).tolist()
    device = model_device(model)
    enc = {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.items()}
    tok = processor.tokenizer
    gen_config = generation_config(processor, max_new_tokens)
    eos = list(gen_config.eos_token_id)
    with torch.no_grad():
        out = model.generate(**enc, generation_config=gen_config)
    new = out.sequences[:, enc["input_ids"].shape[1]:]
    texts = tok.batch_decode(new, skip_special_tokens=True)
    stopped = [any(int(x) in eos for x in row) for row in new]
    p_true = p_true_from_logits(out.logits[0], true_id, false_id).tolist()
    records = []
    for ex, text, stop, p, v in zip(examples, texts, stopped, p_true, visual):
        parsed = parse(text)
        records.append({"uid": ex.uid, "raw_output": text, "prediction": parsed.value, "valid": parsed.valid,
                        "parse_reason": parsed.reason, "stopped": stop, "p_true": p, "visual_tokens": v})
    return records


def accuracy_by(records: list[dict], examples: list, key=lambda ex: ex.meta.get("family", "all")) -> dict:
    """Accuracy and share predicted True per group (e.g. per statement family), plus 'all'."""
    groups: dict[str, list[tuple[bool, bool]]] = {}
    for r, ex in zip(records, examples):
        for g in dict.fromkeys((key(ex), "all")):  # an example without a group is counted in "all" once
            groups.setdefault(g, []).append((r["prediction"], ex.label))
    return {g: {"n": len(v), "accuracy": sum(p == y for p, y in v) / len(v),
                "share_pred_true": sum(p for p, _ in v) / len(v)} for g, v in sorted(groups.items())}
