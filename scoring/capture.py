"""What one forward pass shows at the answer position: the attention row of every layer, and every layer's
hidden state (for the logit lens), without storing anything else.

The pass is the ordinary one (score mode's left-padded batch, `logits_to_keep=1`). Two recorders ride
along:

`AnswerRowAttention` - the language model's attention is dispatched through transformers'
`ALL_ATTENTION_FUNCTIONS[config._attn_implementation]` (transformers 5.24, `Qwen2VLAttention.forward`),
with the query and key AFTER rotary embedding (Setup/NOTES.md §3). While the recorder is active, the text config's
implementation name points at a registered wrapper that (1) computes softmax(q K^T * scale + mask) for
the LAST query position only (the answer position), in float32, and (2) hands the whole call to the
implementation the model was loaded with (sdpa, eager, flash...), so the layer's output is exactly the
usual one. Memory: heads x sequence per layer (28 x 12 x ~1,000 floats for Qwen2-VL-2B on an NLVR2 pair
at 512*28^2), never the sequence x sequence map that `output_attentions` (eager only) would build. The
vision tower keeps its own implementation (its config is separate).

`LastPositionStates` - forward hooks on the decoder layers keep `hidden[:, -1]` of the embeddings (the
input of layer 0) and of every layer's output: (layers + 1) x hidden per row.

`visual_layout` maps each visual token back to its cell of its image: the processor resizes an image to
multiples of 28 (patch 14 x merge 2), cuts 14x14 patches, and the merger joins each 2x2 block into one
token, row-major over the (t, h/2, w/2) grid of `image_grid_thw` (Setup/NOTES.md §2). The tests check
this against the processor's pixel patches and the M-RoPE positions of `get_rope_index`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from utils.errors import VLMStudiesError
from scoring.modes import p_true_from_logits

ROW_IMPL_PREFIX = "vlm_studies_answer_row_"
_ACTIVE: list = []  # recorders in effect (innermost last); the registered wrapper writes into the last


def unwrap(model):
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def language_model(model):
    """The decoder stack of a Qwen2-VL (`model.model.language_model` in transformers 5)."""
    base = unwrap(model)
    inner = getattr(base, "model", None)
    lm = getattr(inner, "language_model", None)
    if lm is None and hasattr(base, "get_decoder"):
        lm = base.get_decoder()
    if lm is None or not hasattr(lm, "layers") or not hasattr(lm, "norm"):

        raise VLMStudiesError(f"{type(base).__name__} has no language model with .layers and .norm; the look-inside "
                              f"views support Qwen2-VL-style models")
    return lm


# ----------------------------------------------------------------------------- attention at the answer row

def answer_row_probs(query, key, attention_mask, scaling: float):
    """softmax(q_last K^T * scaling + mask) per head: `(batch, heads, keys)` in float32.

    `query` (batch, heads, q_len, dim) and `key` (batch, kv_heads, keys, dim) as the attention function
    receives them (grouped-query heads share a key head: head h reads key head h // (heads / kv_heads),
    as `repeat_kv` lays them out). `attention_mask`: None (causal with no padding: the last query sees
    every key), a 4-D boolean (True = attend) or additive float mask, or a 2-D padding mask (1 = attend).
    """
    import torch

    b, h, _, d = query.shape
    kv = key.shape[1]
    q = query[:, :, -1, :].float().reshape(b, kv, h // kv, d)
    scores = torch.matmul(q, key.float().transpose(-1, -2)).reshape(b, h, -1) * scaling
    if attention_mask is not None:
        m = attention_mask[:, :, -1, :] if attention_mask.dim() == 4 else attention_mask[:, None, :]
        m = m[..., -scores.shape[-1]:]
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, float("-inf"))
        elif attention_mask.dim() == 2:
            scores = scores.masked_fill(m == 0, float("-inf"))
        else:
            scores = scores + m.float()
    return scores.softmax(-1)


def _make_row_attention(original: str):
    """The registered wrapper around implementation `original` (see the module docstring)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.qwen2_vl.modeling_qwen2_vl import eager_attention_forward

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        if _ACTIVE and getattr(module, "layer_idx", None) is not None:
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            _ACTIVE[-1].record(module.layer_idx, answer_row_probs(query, key, attention_mask, scale))
        impl = ALL_ATTENTION_FUNCTIONS.get_interface(original, eager_attention_forward)
        return impl(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    return attention


def _register(original: str) -> str:
    """Register the wrapper (and the mask `original` uses) under one name per original implementation."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    name = ROW_IMPL_PREFIX + original
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_row_attention(original))
        # the same mask as the original implementation (sdpa: None or boolean; eager: additive), so the
        # delegated call sees exactly what it would have seen
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    return name


class AnswerRowAttention:
    """Context manager: while active, `rows[layer]` collects the answer row's attention (batch, heads, keys).

    `keep_rows` (batch indices) limits what is kept; rows are moved to the CPU as float32.
    """

    def __init__(self, model, keep_rows=None):
        self.model, self.keep_rows = model, keep_rows
        self.rows: dict[int, object] = {}
        self._config = None

    def record(self, layer: int, probs) -> None:
        if self.keep_rows is not None:
            probs = probs[list(self.keep_rows)]
        self.rows[layer] = probs.detach().to("cpu")

    def __enter__(self):
        config = language_model(self.model).config
        original = config._attn_implementation or "eager"
        if original.startswith(ROW_IMPL_PREFIX):  # nested: the outer recorder already switched it
            self._config = None
        else:
            self._config, self._original = config, original
            config._attn_implementation = _register(original)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        if self._config is not None:
            self._config._attn_implementation = self._original
        return False

    def stacked(self):
        """`(batch, layers, heads, keys)` tensor of the recorded rows."""
        import torch

        return torch.stack([self.rows[i] for i in sorted(self.rows)], dim=1)


# ----------------------------------------------------------------------------- hidden states (logit lens)

class LastPositionStates:
    """Context manager: `states()` gives `(batch, layers + 1, hidden)`: the embeddings entering layer 0, then
    each decoder layer's output, at the last (answer) position. The model's own hidden states are not kept."""

    def __init__(self, model):
        self.layers = language_model(model).layers
        self._first, self._outs, self._handles = None, {}, []

    def __enter__(self):
        def pre(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            self._first = h[:, -1].detach()

        def make_post(i):
            def post(module, args, output):
                h = output[0] if isinstance(output, tuple) else output
                self._outs[i] = h[:, -1].detach()
            return post

        self._handles.append(self.layers[0].register_forward_pre_hook(pre, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(make_post(i)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    def states(self):
        import torch

        return torch.stack([self._first] + [self._outs[i] for i in range(len(self.layers))], dim=1)


def lens_p_true(model, states, true_id: int, false_id: int) -> tuple[list, list]:
    """Logit lens: the final norm and `lm_head` applied to each layer's answer-position state.

    Returns per row `(p_true, answer_mass)` lists over layers (embeddings first): `p_true` as score mode
    reads it (True vs False renormalised over those two tokens), `answer_mass` = P(True) + P(False) over
    the whole vocabulary, i.e. how much that layer's readout is about the answer at all.
    """
    import torch


    base = unwrap(model)
    norm, head = language_model(model).norm, base.get_output_embeddings()
    with torch.no_grad():
        h = states.to(device=head.weight.device, dtype=head.weight.dtype)
        logits = head(norm(h)).float()
    p_true = p_true_from_logits(logits, true_id, false_id)
    mass = logits.softmax(-1)[..., [true_id, false_id]].sum(-1)
    return p_true.cpu().tolist(), mass.cpu().tolist()


# ----------------------------------------------------------------------------- visual tokens -> image cells

@dataclass
class ImageCells:
    """Where one image's visual tokens sit in the sequence and which cell of the image each one covers."""

    index: int  # 0 = left, 1 = right (the prompt's image order)
    positions: list  # token positions in the sequence, in the order the merger emits them
    grid: tuple  # (t, rows, cols) in visual tokens (image_grid_thw divided by the merge size)
    resized: tuple  # (height, width) in pixels after the processor's resize
    cell: int  # pixels per cell side in the resized image (patch size x merge size: 28)
    cells: list = field(default_factory=list)  # per token: (t, row, col)

    @property
    def side(self) -> str:
        return ("left", "right")[self.index] if self.index < 2 else f"image{self.index}"

    def as_grid(self, values):
        """`values` per token (in `positions` order) -> rows x cols nested lists (first frame)."""
        _, rows, cols = self.grid
        out = [[0.0] * cols for _ in range(rows)]
        for v, (t, r, c) in zip(values, self.cells):
            if t == 0:
                out[r][c] = float(v)
        return out


def visual_layout(input_ids, image_grid_thw, image_token_id: int, merge: int, patch: int) -> list[list[ImageCells]]:
    """Per batch row, its images' `ImageCells` (left, right, ...), from the processor's output.

    `image_grid_thw` lists the images of the whole batch in order (row 0's images, then row 1's...). A
    run of visual tokens whose length disagrees with its grid is an error, never a silent misplacement.
    """
    grids = [tuple(int(x) for x in g) for g in image_grid_thw.tolist()]
    out, k = [], 0
    for row in input_ids.tolist():
        runs, start = [], None
        for i, tok in enumerate(row + [None]):
            if tok == image_token_id and start is None:
                start = i
            elif tok != image_token_id and start is not None:
                runs.append(list(range(start, i)))
                start = None
        images = []
        for j, positions in enumerate(runs):
            if k >= len(grids):
                raise VLMStudiesError("more runs of visual tokens than entries in image_grid_thw")
            t, h, w = grids[k]
            rows, cols = h // merge, w // merge
            if t * rows * cols != len(positions):
                raise VLMStudiesError(f"image {j}: {len(positions)} visual tokens but grid {t}x{h}x{w} / merge {merge} "
                                      f"gives {t * rows * cols}")
            cells = [(n // (rows * cols), (n % (rows * cols)) // cols, n % cols) for n in range(len(positions))]
            images.append(ImageCells(j, positions, (t, rows, cols), (h * patch, w * patch), patch * merge, cells))
            k += 1
        out.append(images)
    return out


def attention_shares(row, images: list[ImageCells]) -> dict:
    """Share of one attention row (keys,) going to each image's visual tokens and to everything else."""
    total = float(row.sum())
    shares = {im.side: float(row[im.positions].sum()) for im in images}
    shares["text"] = total - sum(shares.values())  # every non-visual token: prompt, specials, the answer slot
    return shares


@contextlib.contextmanager
def adapter_state(model, enabled: bool):
    """The model with its LoRA adapter on (`enabled`) or off (the base model), for before/after views."""
    if enabled or not hasattr(model, "disable_adapter"):
        yield model
    else:
        with model.disable_adapter():
            yield model
