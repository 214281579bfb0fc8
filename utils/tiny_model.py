"""Build a randomly initialised Qwen2-VL of the real class, with a processor in the real chat format.

The model is `Qwen2VLForConditionalGeneration`, the processor a stock `Qwen2VLProcessor` whose chat
template is the Qwen2-VL template shipped inside the installed TRL package (byte-identical to the one on
the Hub), and whose tokenizer is one of two vocabularies:
  toy   - (default) a small byte-level BPE (~620 tokens) trained here, carrying Qwen2-VL's special
          tokens: fast to build and to run, so the CPU demo and most tests use it. Sentences cost about
          twice as many tokens as with the real vocabulary.
  qwen2 - Qwen2's real vocabulary (151,643 BPE ranks + Qwen2-VL's special tokens at their real ids,
          `utils.qwen2_vocab`; needs `pip install dashscope==2.0.2`). The embedding then has Qwen2-VL-2B's
          151,936 rows; hidden sizes stay tiny. Both are written with `save_pretrained`, so the code that loads `Qwen/Qwen2-VL-2B-Instruct`
(`AutoModelForImageTextToText` / `AutoProcessor.from_pretrained(path)`) loads them unchanged.

Sizes:
  tiny  - for unit tests: builds and runs a forward pass in milliseconds.
  small - for the CPU smoke fine-tune. Initialised with a larger `initializer_range` (0.1 rather
          than 0.02): at 0.02 a random tiny Qwen2-VL barely sees its images and cannot learn
          image-dependent answers in minutes (see Setup/LOG.md and Setup/NOTES.md §4).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from utils.errors import VLMStudiesError
from utils.io import check_output_dir, files_match, install_dir, read_json_field
from utils.locks import locked
from utils.paths import subdir

TEMPLATE_FILE = "qwen2_5_vl.jinja"  # TRL ships Qwen2-VL's template under this name (identical bytes)

# Qwen2-VL's special tokens in their published order (ids 151643..151656 in the real vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Real Qwen2-VL image-processor defaults (Setup/NOTES.md §2), saved as the real processor saves them; no run uses
# the max: every load applies the run's pixel budget (vlm_datasets.prompts.pixel_budget).
BUILDER_VERSION = 2  # bump when the tokenizer, processor or config recipe changes: stale local models get rebuilt
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vision_depth: int
    vision_embed_dim: int  # 64 is the smallest that bitsandbytes 4-bit accepts here (32 crashes)
    vision_heads: int
    initializer_range: float
    vocab_size: int = 1024


SIZES: dict[str, TinySpec] = {
    "tiny": TinySpec(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                     vision_depth=1, vision_embed_dim=64, vision_heads=4, initializer_range=0.1),
    # Three layers and two heads of 64 dims: the smoke fine-tune must tell the left image from the right,
    # which only rotary position can do (both images pass the same vision tower). Head dim 64 gives M-RoPE
    # 8 temporal frequencies (the real model's 128 gives 16; 32 gave 4), and a third layer a spare hop.
    # With 2 layers x 4 heads, LoRA on the language model reached 95% on both grounding families in 3 of
    # 6 runs of 500-600 steps (the others stalled near 75%); with this spec and LoRA on the merger too
    # (training/configs/smoke_cpu.yaml), 10 of 10 seeds reached 100% by step 200.
    "small": TinySpec(hidden_size=128, intermediate_size=256, num_layers=3, num_heads=2, num_kv_heads=1,
                      vision_depth=2, vision_embed_dim=64, vision_heads=4, initializer_range=0.1),
}

# Words the BPE should know as whole tokens: the answers, prompt scaffolding, and NLVR2-style
# statement vocabulary. Anything else still tokenizes (byte-level fallback).
_CORPUS_WORDS = (
    "True False Yes No true false yes no Answer answer or and not the a an of in on is are there "
    "left right image images picture pictures Picture contains contain shows show exactly more fewer than "
    "same number both neither each one two three four five six seven eight zero shape shapes circle circles "
    "square squares triangle triangles red green blue yellow purple orange black white gray small large "
    "statement Statement true? Is this about two photographs dog dogs cat birds animal animals standing "
    "near next to at least total at most you helpful assistant system user What Describe describe"
)


def _corpus() -> list[str]:
    lines = []
    words = _CORPUS_WORDS.split()
    for i in range(len(words)):
        lines.append(" ".join(words[i:i + 8]))
    # Answers and the template scaffolding appear often so each becomes a single token, as in Qwen's
    # real vocabulary ("True" and "False" are one token each there).
    lines += ["True", "False", " True", " False", "Answer True or False.", "system\nYou are a helpful assistant.",
              "user\n", "assistant\n", "Picture 1: ", "Picture 2: "] * 40
    return lines


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE with Qwen2's pre-tokenizer and special tokens, as a `Qwen2Tokenizer`."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    bpe.train_from_iterator(_corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})  # ids in Qwen's order
    tok.eos_token = "<|im_end|>"  # as in Qwen2-VL-Instruct: <|im_end|> ends a turn, <|endoftext|> pads
    tok.model_max_length = 32768
    return tok


def load_chat_template() -> str:
    """Qwen2-VL's chat template, read from the installed TRL package's data files."""
    import trl

    path = Path(trl.__file__).parent / "chat_templates" / TEMPLATE_FILE
    return path.read_text(encoding="utf-8")


VOCABS = ("toy", "qwen2")


def build_processor(vocab_size: int = 1024, vocab: str = "toy"):
    """A stock `Qwen2VLProcessor` with the `vocab` tokenizer ("toy" of `vocab_size` tokens, or "qwen2")."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    if vocab == "qwen2":
        from utils.qwen2_vocab import build_qwen2_tokenizer

        tok = build_qwen2_tokenizer()
    elif vocab == "toy":
        tok = build_tokenizer(vocab_size)
    else:

        raise VLMStudiesError(f"unknown vocabulary '{vocab}'; choose one of {', '.join(VOCABS)}")
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tok,
                            video_processor=Qwen2VLVideoProcessor(), chat_template=load_chat_template())


def build_config(spec: TinySpec, tokenizer, vocab_rows: int | None = None):
    from transformers import Qwen2VLConfig

    head_dim = spec.hidden_size // spec.num_heads
    half = head_dim // 2  # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width)
    t = half // 4
    mrope = [t, (half - t) // 2, half - t - (half - t) // 2]
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab_rows or len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
            initializer_range=spec.initializer_range, bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=spec.vision_depth, embed_dim=spec.vision_embed_dim, hidden_size=spec.hidden_size,
            num_heads=spec.vision_heads, mlp_ratio=2, initializer_range=spec.initializer_range,
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_tiny_qwen2vl(size: str = "tiny", seed: int = 0, vocab: str = "toy"):
    """Return `(model, processor)`: a random Qwen2-VL of `size` ("tiny" or "small") with the `vocab` tokenizer
    ("toy" or "qwen2"), deterministic in `seed`."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration


    if size not in SIZES:
        raise VLMStudiesError(f"unknown tiny-model size '{size}'; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    processor = build_processor(spec.vocab_size, vocab)
    rows = None
    if vocab == "qwen2":
        from utils.qwen2_vocab import EMBEDDING_ROWS

        rows = EMBEDDING_ROWS  # as Qwen2-VL-2B: the vocabulary padded to 151,936 rows
    config = build_config(spec, processor.tokenizer, rows)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2VLForConditionalGeneration(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model.eval(), processor


def save_tiny_qwen2vl(out: str | os.PathLike, size: str = "tiny", seed: int = 0, vocab: str = "toy") -> Path:
    """Build and write a tiny model + processor to `out` (written aside, then renamed into place)."""
    import shutil


    out = Path(out)
    check_output_dir(out, "scripts/make_tiny_model.py", _is_tiny_model, "pick another --out")  # before any work
    model, processor = build_tiny_qwen2vl(size, seed, vocab)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    info = {"kind": "vlm_studies_tiny_qwen2vl", "builder_version": BUILDER_VERSION, "size": size, "seed": seed,
            "vocab": vocab, "vocab_tokens": len(processor.tokenizer), "spec": asdict(SIZES[size]),
            "parameters": sum(p.numel() for p in model.parameters()),
            "weights_sha256": hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()}
    (tmp / "tiny_model_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    # Replaces only an earlier tiny model (its info file says so), never a folder of anything else.
    install_dir(tmp, out, "scripts/make_tiny_model.py", recognise=_is_tiny_model, hint="pick another --out")
    return out


def _is_tiny_model(folder: Path) -> bool:
    """An earlier tiny model (its info file says so, and it holds nothing else): the one folder it replaces."""

    return read_json_field(folder / "tiny_model_info.json", "kind") == "vlm_studies_tiny_qwen2vl" and files_match(
        folder, ("*.json", "*.safetensors", "*.jinja", "*.txt"))


def ensure_tiny_model(size: str = "small", seed: int = 0, root=None) -> Path:
    """The default local model under `<root>/models/`, built on first use."""

    path = subdir("models", root) / f"qwen2vl-{size}-seed{seed}"
    info = path / "tiny_model_info.json"
    # A folder built from an older spec of this size (SIZES changed since) is rebuilt, not reused silently.
    def current() -> bool:
        stored = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
        return stored.get("spec") == asdict(SIZES[size]) and stored.get("builder_version") == BUILDER_VERSION

    if current():
        return path
    if _distributed_rank() not in (None, 0):
        # transformers' save_pretrained writes nothing on ranks other than 0 of an initialised process
        # group (accelerate launch): rank 0 builds, the others wait for it.
        import time


        deadline = time.time() + 600
        while not current():
            if time.time() > deadline:
                raise VLMStudiesError(f"waited 10 min for rank 0 to build {path}; build it first with "
                                      f"`python scripts/make_tiny_model.py --size {size} --out {path}`")
            time.sleep(0.5)
        return path

    with locked(path, timeout=600):  # one of several concurrent processes builds it
        if not current():
            save_tiny_qwen2vl(path, size=size, seed=seed)
    return path


def _distributed_rank() -> int | None:
    try:
        import torch.distributed as dist

        return dist.get_rank() if dist.is_available() and dist.is_initialized() else None
    except Exception:
        return None
