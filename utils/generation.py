"""Decoding settings owned by the lab, never inherited from a checkpoint's generation_config.json.

`generate(generation_config=cfg)` fills every field of `cfg` left at None from the model's own
`generation_config` (transformers 5.24 `_prepare_generation_config`). Qwen2-VL ships `do_sample: true,
temperature 0.1, top_p 0.001, top_k 1, repetition_penalty 1.05` (Setup/NOTES.md §2), so a "greedy" call
that sets only `do_sample=False` still decodes with a repetition penalty. `decoding_config` therefore pins
every field transformers would otherwise take from the checkpoint to its neutral default (greedy, one beam,
no repetition penalty, temperature 1 / top_p 1 / top_k 50: values greedy ignores and transformers does not
warn about), and sets eos to the end-of-turn tokens read from the tokenizer.
"""

from __future__ import annotations

# Named in eval identities: bump it when `decoding_config`'s greedy settings change, so runs decoded under
# different settings are never mixed in one run dir.
LAB_DECODING = "lab-greedy-v1"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")  # end of the assistant turn; end of text (also Qwen2's pad)
# Settings worth recording: the ones that change what greedy or sampled decoding produces.
RECORDED = ("do_sample", "num_beams", "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
            "no_repeat_ngram_size", "length_penalty", "eos_token_id", "pad_token_id")


def end_token_ids(tokenizer) -> list[int]:
    """Ids of `<|im_end|>` and `<|endoftext|>` in this tokenizer (those it has)."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    # looked up by name, not convert_tokens_to_ids: Qwen2's unk token IS <|endoftext|>, so an unknown name and
    # <|endoftext|> give the same id. Special tokens are added tokens (a small table; the vocabulary is 151k).
    added = getattr(tok, "added_tokens_encoder", None) or {}
    ids = []
    for name in END_TOKENS:
        i = added.get(name, tok.get_vocab().get(name) if name not in added else None)
        if i is not None and i not in ids:
            ids.append(i)
    if not ids and tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return ids


def _pinned_defaults() -> dict:
    """transformers' global defaults that are not None: pinning them stops the checkpoint's values leaking in."""
    from transformers import GenerationConfig

    return {k: v for k, v in GenerationConfig._get_default_generation_params().items()
            if v is not None and k not in ("max_length", "return_dict_in_generate", "output_scores")}


def decoding_config(tokenizer, max_new_tokens: int, do_sample: bool = False, temperature: float | None = None,
                    top_p: float | None = None, top_k: int | None = None, num_beams: int = 1,
                    repetition_penalty: float = 1.0, **extra):
    """A `GenerationConfig` built by the lab: greedy unless `do_sample`; nothing comes from the checkpoint.

    Sampling knobs are used only with `do_sample` (left at transformers' neutral defaults otherwise).
    `extra` goes into the config as is (e.g. `output_logits=True, return_dict_in_generate=True`).
    """
    from transformers import GenerationConfig

    tok = getattr(tokenizer, "tokenizer", tokenizer)
    eos = end_token_ids(tok)
    settings = {**_pinned_defaults(), "max_new_tokens": int(max_new_tokens), "do_sample": bool(do_sample),
                "num_beams": int(num_beams), "repetition_penalty": float(repetition_penalty), "eos_token_id": eos,
                "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else eos[0]}
    if do_sample:
        settings.update({k: v for k, v in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k))
                         if v is not None})
    return GenerationConfig(**{**settings, **extra})


def checkpoint_config(model, max_new_tokens: int):
    """The checkpoint's own generation_config.json, with only `max_new_tokens` set (the playground's opt-in)."""
    import copy

    cfg = copy.deepcopy(model.generation_config)
    cfg.max_new_tokens = int(max_new_tokens)
    return cfg


def describe(cfg, source: str) -> dict:
    """The settings that decide the output, as recorded in a run (`source`: lab or checkpoint)."""
    out = {"source": source}
    for k in RECORDED:
        v = getattr(cfg, k, None)
        out[k] = list(v) if isinstance(v, tuple) else v
    if not out.get("do_sample"):  # greedy / beam search ignore them: do not record values that did nothing
        for k in ("temperature", "top_p", "top_k"):
            out.pop(k, None)
    return out


def ignored_checkpoint_settings(model) -> dict:
    """What the checkpoint's generation_config.json sets that the lab's decoding does not use (for the record)."""
    from transformers import GenerationConfig

    gc = getattr(model, "generation_config", None)
    if gc is None:
        return {}
    d = gc.to_diff_dict() if hasattr(gc, "to_diff_dict") else {}
    base = GenerationConfig().to_dict()
    return {k: v for k, v in d.items() if k in RECORDED and k not in ("eos_token_id", "pad_token_id")
            and v != base.get(k)}
