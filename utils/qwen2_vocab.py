"""Qwen2's real vocabulary, offline: a tokenizer rebuilt from the BPE ranks that ship inside a PyPI package.

Qwen2's 151,643 byte-level BPE ranks ship as `dashscope/resources/qwen.tiktoken` in dashscope 2.x (one
"base64(token bytes) rank" per line; Setup/NOTES.md §6). Only that data file is read: dashscope itself is
never imported (its import pulls a web client stack). From the ranks this module builds a
`Qwen2Tokenizer` the way transformers converts a tiktoken vocabulary (`TikTokenConverter`): the byte-level
vocabulary in GPT-2's byte-to-unicode alphabet, and as merges every split of each token into two tokens of
the vocabulary, ordered by the rank of the token they make. On top: Qwen2's pre-tokenizer regex and NFC
normaliser (`Qwen2Tokenizer` sets both), and Qwen2-VL's 14 special tokens at their real ids 151643-151656
(`utils.tiny_model.SPECIAL_TOKENS`, appended after the ranks in their published order).

Checked by tests/test_qwen2_vocab.py against the published ids ("True" 2514, "False" 4049, ...) and
against tiktoken's own encoder on the same ranks. Building takes a few seconds (figures in the README);
the vocabulary is read once per process.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from utils.errors import VLMStudiesError
from utils.tiny_model import SPECIAL_TOKENS

PACKAGE = "dashscope"
PIN = "dashscope==2.0.2"  # requirements-dev.txt; the version whose qwen.tiktoken the tests were checked on
RESOURCE = ("resources", "qwen.tiktoken")
N_RANKS = 151643  # byte-level BPE tokens 0..151642; the special tokens follow
EMBEDDING_ROWS = 151936  # Qwen2-VL-2B's embedding rows: the vocabulary padded (Setup/NOTES.md §2)


def ranks_path() -> Path:
    """Where the installed dashscope keeps `qwen.tiktoken` (found without importing dashscope)."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc).joinpath(*RESOURCE)
        if path.is_file():
            return path
    if not locations:
        raise VLMStudiesError(f"Qwen2's real vocabulary needs the BPE ranks shipped with dashscope, which is not "
                              f"installed: pip install {PIN}")
    raise VLMStudiesError(f"the installed dashscope has no {'/'.join(RESOURCE)} (looked in {locations[0]}); "
                          f"install the version this lab was checked with: pip install {PIN}")


def available() -> bool:
    """True when the ranks file is installed (the real vocabulary can be built)."""
    try:
        ranks_path()
        return True
    except VLMStudiesError:
        return False


def load_ranks(path: str | Path | None = None) -> dict[bytes, int]:
    """`{token bytes: rank}` from a tiktoken ranks file; it must hold ranks 0..151642, each once."""
    path = Path(path) if path else ranks_path()
    ranks: dict[bytes, int] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise VLMStudiesError(f"{path} line {i} is not 'base64-token rank': {line[:60]!r}") from None
    if len(ranks) != N_RANKS or sorted(ranks.values()) != list(range(N_RANKS)):
        raise VLMStudiesError(f"{path} holds {len(ranks)} distinct tokens, not Qwen2's {N_RANKS} ranks 0..{N_RANKS - 1}; "
                              f"reinstall: pip install {PIN}")
    return ranks


def vocab_and_merges(path: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen2's byte-level vocabulary and BPE merges, derived from the ranks at `path` (default: the installed
    dashscope's; looked up on every call, so a missing package is reported even after an earlier build)."""
    return _vocab_and_merges(str(Path(path) if path else ranks_path()))


@functools.lru_cache(maxsize=2)
def _vocab_and_merges(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks = load_ranks(path)
    alphabet = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    vocab = {text(b): r for b, r in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        # every split into two known tokens merges into this one; lower ranks merge first (tiktoken's order)
        local = [(ranks[token[:i]], ranks[token[i:]], token[:i], token[i:], rank)
                 for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges.extend(sorted(local))
    merges.sort(key=lambda m: m[4])
    return vocab, [(text(a), text(b)) for _, _, a, b, _ in merges]


def build_qwen2_tokenizer():
    """A `Qwen2Tokenizer` with Qwen2's real vocabulary and Qwen2-VL's special tokens at ids 151643-151656."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer


    vocab, merges = vocab_and_merges()
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges))  # adds <|endoftext|> (unk/pad) at 151643
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.eos_token = "<|im_end|>"  # as Qwen2-VL-Instruct's tokenizer_config.json: the end of a turn
    tok.model_max_length = 32768
    got = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if got != list(range(N_RANKS, N_RANKS + len(SPECIAL_TOKENS))):
        raise VLMStudiesError(f"special tokens landed at ids {got}, not Qwen2-VL's {N_RANKS}..; this is a bug")
    return tok


@functools.lru_cache(maxsize=1)
def shared_tokenizer():
    """One Qwen2 tokenizer per process for counting tokens (the planner); callers must not change it."""
    return build_qwen2_tokenizer()
