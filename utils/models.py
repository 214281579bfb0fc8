"""Load a Qwen2-VL (Hub id, local folder, or `local:tiny` / `local:small`) with its processor.

One function serves training, evaluation, the playground and the benchmarks, for
`Qwen/Qwen2-VL-2B-Instruct` and for the local tiny models alike: they differ only in the name
passed in. Optional: a LoRA adapter on top, 4-bit NF4 quantisation (Q-LoRA). Images are always resized
within a pixel budget: the one given, else the lab's default (`vlm_datasets.prompts.pixel_budget`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from utils.errors import closest, hub_error, VLMStudiesError
from utils.images import pixel_budget, set_pixel_limits
from utils.hub import go_offline_unless_reachable
from utils.io import atomic_write_json
from utils.paths import existing_names
from utils.tiny_model import SIZES, ensure_tiny_model

LOCAL_PREFIX = "local:"
ADAPTER_SUBDIR = "adapter"  # a training run dir keeps its final adapter (+ processor files) here
BASE_MODEL_FILE = "base_model.json"  # written beside an adapter: which base it was trained on
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # the only adapter weights format that is loaded


def resolve_model_path(name: str, root=None) -> str:
    """`local:small` / `local:tiny[:seed]` -> the built local model folder (built on first use); else `name`."""
    if name.startswith(LOCAL_PREFIX):

        parts = name[len(LOCAL_PREFIX):].split(":")
        size = parts[0]
        seed = int(parts[1]) if len(parts) > 1 else 0
        if size not in SIZES:
            raise VLMStudiesError(f"unknown local model '{name}'; use local:tiny or local:small")
        return str(ensure_tiny_model(size, seed, root))
    if not Path(name).expanduser().exists():  # a Hub id: find out at once whether the Hub answers

        go_offline_unless_reachable(f"model {name}")
    return name


def _local_hint(name: str) -> str:
    # `hf` is huggingface_hub's CLI (its `huggingface-cli` is gone in the installed 1.x/2.x releases)
    return (f"Download it on a machine with network (`hf download {name}`) so it is in the HF cache (or `hf download "
            f"{name} --local-dir DIR` and pass DIR), or use local:small for the CPU model")


def pick_dtype(requested: str = "auto"):
    """bf16 on GPUs that support it, else fp32. fp16 only when asked: Qwen2-VL gives NaN/garbage in fp16."""
    import torch

    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
             "fp16": torch.float16, "float16": torch.float16}
    if requested in (None, "auto"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if requested not in table:
        raise VLMStudiesError(f"unknown dtype '{requested}'; choose auto, bf16, fp32 or fp16")
    return table[requested]


def quantization_config(compute_dtype=None):
    """4-bit NF4 with double quantisation; the vision tower and lm_head stay unquantised.

    `model.visual` (not a bare `visual`, which matches nothing in transformers 5) is skipped so
    the image encoder keeps full precision.
    """
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.float32,
                              llm_int8_skip_modules=["model.visual", "lm_head"])


def patch_4bit_for_cpu(model) -> int:
    """On CPU, stop bitsandbytes from repacking 4-bit weights for inference.

    On CPUs with avx512_bf16, any no-grad forward repacks the weights, after which training fails
    in-place ("a view of a leaf Variable..."). Returns the number of layers patched.
    """
    n = 0
    for module in model.modules():
        if type(module).__name__ == "Linear4bit" and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_processor(name_or_path: str, min_pixels: int | None = None, max_pixels: int | None = None,
                   padding_side: str | None = None, root=None):
    """The model's processor, resizing images within the given pixel bounds (the lab's default budget,
    `vlm_datasets.prompts.pixel_budget`, for a bound left None)."""
    from transformers import AutoProcessor

    path = resolve_model_path(name_or_path, root)
    try:
        processor = AutoProcessor.from_pretrained(path)
    except Exception as exc:
        raise hub_error("processor", name_or_path, exc, _local_hint(name_or_path)) from None
    if not hasattr(processor, "image_processor"):
        raise VLMStudiesError(f"{name_or_path} has no image processor (got {type(processor).__name__}); it is not a "
                              f"vision-language model folder, or its processor files are missing")
    # Always the run's budget (the lab default for a bound not given), never the processor's own 16384*28*28.
    set_pixel_limits(processor, *pixel_budget(min_pixels, max_pixels))
    if padding_side:
        processor.tokenizer.padding_side = padding_side
    return processor


def load_model(name_or_path: str, dtype: str = "auto", load_in_4bit: bool = False,
               attn_implementation: str | None = None, device_map=None, root=None):
    import torch
    from transformers import AutoModelForImageTextToText

    path = resolve_model_path(name_or_path, root)
    torch_dtype = pick_dtype(dtype)
    kwargs = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(torch_dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif torch.cuda.is_available():
        # this process's GPU (the local rank's under accelerate launch / torchrun; GPU 0 otherwise)
        kwargs["device_map"] = {"": torch.cuda.current_device()} if load_in_4bit else None
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except ImportError as exc:
        raise VLMStudiesError(f"cannot load {name_or_path}: {exc}") from None
    except Exception as exc:
        if isinstance(exc, (OSError, ValueError)) or "hub" in type(exc).__module__:
            raise hub_error("model", name_or_path, exc, _local_hint(name_or_path)) from None
        raise
    if load_in_4bit and not torch.cuda.is_available():
        patch_4bit_for_cpu(model)
    if device_map is None and torch.cuda.is_available() and not load_in_4bit:
        model = model.to("cuda")
    return model


def config_fingerprint(config) -> str:
    """A hash of the architecture-defining parts of a model config (same base => same hash)."""
    d = config.to_dict()
    keep = {k: d.get(k) for k in ("model_type", "image_token_id", "vision_start_token_id")}
    for sub in ("text_config", "vision_config"):
        s = d.get(sub) or {}
        keep[sub] = {k: s.get(k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "num_key_value_heads", "depth", "embed_dim",
                                            "num_heads")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def resolve_adapter_dir(adapter: str | os.PathLike) -> Path:
    """An adapter folder, or a training run dir (its `adapter/` subfolder); clear errors otherwise."""
    path = Path(adapter).expanduser()
    if not path.exists():

        near = closest(str(adapter), existing_names(adapter, kinds=("checkpoints",)))
        raise VLMStudiesError(f"adapter {path} does not exist{near}; give a training run name, a run dir or a folder "
                              f"holding adapter_config.json")
    if (path / ADAPTER_SUBDIR / "adapter_config.json").is_file():
        path = path / ADAPTER_SUBDIR
    if not (path / "adapter_config.json").is_file():
        raise VLMStudiesError(f"{path} holds no adapter_config.json; it is not a LoRA adapter folder (a training run "
                              f"dir keeps its final adapter in {ADAPTER_SUBDIR}/ once training finished)")
    if not (path / ADAPTER_WEIGHTS).is_file():
        pickles = sorted(p.name for p in path.glob("adapter_model*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        if pickles:
            # A pickle can run code when it is loaded; PEFT would unpickle it (or its error would suggest
            # weights_only=False). Only safetensors weights are loaded.
            raise VLMStudiesError(f"adapter {path} holds {pickles[0]} (a pickle, which can run code when loaded) "
                                  f"and no {ADAPTER_WEIGHTS}; only safetensors adapters are loaded: re-save it "
                                  f"with safetensors where you trust it (PeftModel.save_pretrained(dir) writes them)")
        raise VLMStudiesError(f"adapter {path} holds no {ADAPTER_WEIGHTS}; the adapter is incomplete (copy it "
                              f"again, or use the training run dir)")
    return path


def write_base_model_record(adapter_dir: str | os.PathLike, base_name: str, model) -> None:

    cfg = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    atomic_write_json(Path(adapter_dir) / BASE_MODEL_FILE,
                      {"base_model": base_name, "config_fingerprint": config_fingerprint(cfg)})


def apply_adapter(model, adapter: str | os.PathLike, base_name: str = "", is_trainable: bool = False):
    """Wrap `model` with the LoRA adapter at `adapter`; an adapter made for another base is an error."""
    from peft import PeftModel

    path = resolve_adapter_dir(adapter)
    record = path / BASE_MODEL_FILE
    if record.is_file():
        want = json.loads(record.read_text(encoding="utf-8")).get("config_fingerprint")
        have = config_fingerprint(model.config)
        if want and want != have:
            made_for = json.loads(record.read_text(encoding="utf-8")).get("base_model")
            raise VLMStudiesError(f"adapter {path} was trained on base '{made_for}', which differs from the loaded "
                                  f"base '{base_name}' (architecture hash {want} != {have}); load the base it was "
                                  f"made for")
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise VLMStudiesError(f"adapter {path} does not fit base '{base_name}' (weight shapes differ); it was "
                                  f"made for another base model") from None
        raise


def load_model_and_processor(model: str, adapter: str | None = None, dtype: str = "auto",
                             load_in_4bit: bool = False, min_pixels: int | None = None,
                             max_pixels: int | None = None, padding_side: str | None = None,
                             attn_implementation: str | None = None, root=None):
    """`(model, processor)` ready for inference; `adapter` (run dir or adapter folder) applied on top."""
    processor = load_processor(model, min_pixels, max_pixels, padding_side, root)
    m = load_model(model, dtype=dtype, load_in_4bit=load_in_4bit, attn_implementation=attn_implementation,
                   root=root)
    if adapter:
        m = apply_adapter(m, adapter, base_name=model)
    m.eval()
    return m, processor
