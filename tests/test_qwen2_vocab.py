"""Qwen2's real vocabulary, offline (utils/qwen2_vocab.py, `make_tiny_model.py --vocab qwen2`).

Checked against facts of the real model and references outside this repo, not against our own fixtures:
- token ids published for Qwen2 (Setup/NOTES.md §2, §6): special tokens 151643-151656, "True" 2514,
  "False" 4049, " True" 3007, " False" 3557, "Yes" 9454, "No" 2753;
- the first 17 input ids transformers' own Qwen2-VL integration test expects from the real processor
  (huggingface/transformers tests/models/qwen2_vl/test_modeling_qwen2_vl.py, `expected_input_ids`);
- Qwen2-VL-2B-Instruct's own chat template (its chat_template.json, embedded below) and what it renders;
- tiktoken's encoder run on the same ranks with Qwen2's pre-tokenizer regex.
The qwen2 model folder is built once per session (conftest `qwen2_model_dir`).
"""

from __future__ import annotations

import json

import pytest

from bench.sentence_tokens import PUBLISHED_SENTENCES
from utils.cli import main_guard
from utils.errors import VLMStudiesError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Qwen2-VL-2B-Instruct's chat_template.json (1.05 kB on the hub, unchanged since its initial commit). Text as
# copied in sophgo/LLM-TPU models/Qwen2_VL/config/chat_template.json, the config folder of a
# Qwen2-VL-2B-Instruct export (its README: base_model Qwen/Qwen2-VL-2B-Instruct); the same template is in
# that folder's tokenizer_config.json.
QWEN2_VL_2B_INSTRUCT_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
FIGURE_1 = PUBLISHED_SENTENCES[0]  # NLVR2 paper, Figure 1
# What that template renders for the lab's two-image prompt (template tf) with the generation prompt, worked out
# by hand from the template text above: default system turn, both images, the statement, the question.
EXPECTED_TWO_IMAGE_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
    f"{FIGURE_1}\nAnswer True or False.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# transformers' Qwen2-VL integration test: one image then "What kind of dog is this?" through the real processor
TRANSFORMERS_EXPECTED_IDS = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198,
                             151652, 151655, 151655]
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
               "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649,
               "<|quad_start|>": 151650, "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653,
               "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656}


def _example(sentence=FIGURE_1, label=True, size=(56, 56)):
    from PIL import Image

    from vlm_datasets.nlvr2 import Example

    img = Image.new("RGB", size, (200, 0, 0))
    return Example(uid="dev-1-0-0", sentence=sentence, label=label, left=img, right=img.copy(), meta={})


def test_real_ids_special_tokens_and_single_token_answers(qwen2_model_dir, qwen2_processor):
    tok = qwen2_processor.tokenizer
    assert type(qwen2_processor).__name__ == "Qwen2VLProcessor" and type(tok).__name__ == "Qwen2Tokenizer"
    assert {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_IDS} == SPECIAL_IDS
    assert len(tok) == 151657 and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for text, want in (("True", 2514), ("False", 4049), (" True", 3007), (" False", 3557), ("Yes", 9454),
                       ("No", 2753)):
        assert tok(text, add_special_tokens=False)["input_ids"] == [want], text
    from vlm_datasets.prompts import answer_token_ids

    assert answer_token_ids(qwen2_processor, "tf") == (2514, 4049)
    # the model has Qwen2-VL-2B's 151,936 embedding rows and the processor's ids in its config
    cfg = json.loads((qwen2_model_dir / "config.json").read_text(encoding="utf-8"))
    text_cfg = cfg.get("text_config", cfg)
    assert text_cfg["vocab_size"] == 151936 and text_cfg["hidden_size"] == 64
    assert (cfg["image_token_id"], cfg["vision_start_token_id"]) == (151655, 151652)
    info = json.loads((qwen2_model_dir / "tiny_model_info.json").read_text(encoding="utf-8"))
    assert info["vocab"] == "qwen2" and info["vocab_tokens"] == 151657


def test_same_ids_as_tiktoken_on_the_same_ranks():
    """The merges derived from the ranks encode exactly as tiktoken does (sentences, digits, unicode, spacing)."""
    import tiktoken
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from utils.qwen2_vocab import load_ranks, shared_tokenizer

    enc = tiktoken.Encoding("qwen2-ranks", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=load_ranks(), special_tokens={})
    tok = shared_tokenizer()
    texts = PUBLISHED_SENTENCES + ["There're 12,345 dogs; isn't it?  Yes!!\n\n\tok", "naïve café — 3.5 x_y",
                                   "左边的图片里有两只狗。", "emoji 🐕🐕 and   spaces   "]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == enc.encode(text), text


def test_chat_text_is_what_qwen2_vl_2b_instructs_template_renders(qwen2_processor):
    from vlm_datasets.prompts import build_inputs, render_prompt

    inputs = build_inputs(_example(), "tf", with_answer=False)
    ours = render_prompt(qwen2_processor, inputs)
    assert ours == EXPECTED_TWO_IMAGE_PROMPT
    # the real template text renders the same, with and without Qwen2-VL's add_vision_id
    real = qwen2_processor.apply_chat_template(inputs["prompt"], chat_template=QWEN2_VL_2B_INSTRUCT_CHAT_TEMPLATE,
                                               tokenize=False, add_generation_prompt=True)
    assert real == ours
    with_ids = qwen2_processor.apply_chat_template(inputs["prompt"], chat_template=QWEN2_VL_2B_INSTRUCT_CHAT_TEMPLATE,
                                                   tokenize=False, add_generation_prompt=True, add_vision_id=True)
    assert with_ids == ours.replace("<|vision_start|>", "Picture 1: <|vision_start|>", 1).replace(
        "<|vision_end|><|vision_start|>", "<|vision_end|>Picture 2: <|vision_start|>")
    assert qwen2_processor.apply_chat_template(inputs["prompt"], tokenize=False, add_generation_prompt=True,
                                               add_vision_id=True) == with_ids

    # token ids as transformers' integration test expects them from the real Qwen2-VL processor
    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What kind of dog is this?"}]}]
    text = qwen2_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = qwen2_processor(text=[text], images=[Image.new("RGB", (112, 84), (0, 90, 0))], return_tensors="pt")
    assert ids["input_ids"][0].tolist()[:17] == TRANSFORMERS_EXPECTED_IDS


def test_length_guard_and_planner_count_with_the_real_vocabulary(qwen2_model_dir, synthetic_dir, tmp_path, root):
    """The guard's count is the collated length with Qwen2's vocabulary, and the planner counts the same text."""
    from training import planner
    from training.data import load_train_data
    from training.model import load_for_training
    from training.options import parse_train_options
    from training.trainer import build_trainer
    from utils.qwen2_vocab import shared_tokenizer

    (mo, lo, do, args), _, _ = parse_train_options([
        "--model", str(qwen2_model_dir), "--source", str(synthetic_dir), "--max_steps", "1",
        "--per_device_train_batch_size", "4", "--activation_checkpointing", "false", "--report_to", "none",
        "--eval_split", "none", "--torch_threads", "1", "--output_dir", str(tmp_path / "checkpoints" / "x")])
    model, processor = load_for_training(mo, do, args)
    data = load_train_data(do, processor, args.max_length, args.seed)
    trainer = build_trainer(model, processor, data, args, lo, args.max_length)
    rows = [data.dataset[i] for i in range(8)]
    batch = trainer.data_collator(rows)
    for i, r in enumerate(rows):
        sentence = r["prompt"][0]["content"][-1]["text"].split("\n")[0]
        label = r["completion"][0]["content"][0]["text"] == "True"
        total, visual = data.guard.length(sentence, label, [im.size for im in r["images"]])
        assert total == int(batch["attention_mask"][i].sum())
        prompt, completion = data.guard.text_tokens(sentence, label)
        # the planner renders the same chat text and counts it with the same vocabulary
        assert planner.text_tokens("tf", sentence, 2, shared_tokenizer()) == prompt + completion
    # counted by hand from Qwen2's published ids: 14 for the system turn and "<|im_start|>user\n", 4 vision
    # markers (the 2 pads are visual tokens), 7 words, ".\n" (one token), "Answer True or False." 5, and
    # "<|im_end|>\n<|im_start|>assistant\n" 5 = 36; the answer "True<|im_end|>\n" = 3
    assert data.guard.text_tokens("The left image contains a red shape.", True) == (36, 3)

    # the planner's own figure for a real NLVR2 sentence: counted, and within a few tokens of its estimate
    counted = planner.text_tokens("tf", FIGURE_1, 2, shared_tokenizer())
    assert counted == len(shared_tokenizer()(EXPECTED_TWO_IMAGE_PROMPT + "True<|im_end|>\n")["input_ids"]) - 2
    assert abs(planner.text_tokens("tf", FIGURE_1) - counted) <= 6
    plan = planner.plan_config(mo, lo, do, args, sentence=FIGURE_1)
    assert plan.text_tokens == counted and plan.text_tokens_from == "counted with Qwen2's vocabulary"


def test_answer_token_ids_refuses_an_answer_of_several_tokens(qwen2_processor, tiny_model_and_processor):
    from vlm_datasets.prompts import PromptTemplate, answer_token_ids

    multi = PromptTemplate("multi", 1, "{sentence}", answer_true="Definitely", answer_false="False")
    with pytest.raises(VLMStudiesError, match=r"answer 'Definitely' is 2 tokens \('Def' \+ 'initely'\).*one token"):
        answer_token_ids(qwen2_processor, multi)
    same = PromptTemplate("same", 1, "{sentence}", answer_true="Yes", answer_false="Yes")
    with pytest.raises(VLMStudiesError, match="same token"):
        answer_token_ids(qwen2_processor, same)
    # every registered template's answers are single tokens in both vocabularies
    from vlm_datasets.prompts import TEMPLATES

    for name in TEMPLATES:
        assert len(set(answer_token_ids(qwen2_processor, name))) == 2
        assert len(set(answer_token_ids(tiny_model_and_processor[1], name))) == 2


def test_score_mode_runs_on_the_real_vocabulary_model(qwen2_model_dir, qwen2_processor):
    from transformers import AutoModelForImageTextToText

    from scoring.modes import score_batch

    model = AutoModelForImageTextToText.from_pretrained(qwen2_model_dir).eval()
    assert model.get_input_embeddings().weight.shape == (151936, 64)
    out = score_batch(model, qwen2_processor, [_example(), _example("One image shows exactly two dogs.", False)])
    assert all(0 < r["p_true"] < 1 for r in out) and [r["visual_tokens"] for r in out] == [8, 8]


def test_missing_dashscope_is_one_clear_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    from scripts.make_tiny_model import main
    from utils import qwen2_vocab

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dashscope" else real(name, *a))
    assert not qwen2_vocab.available()
    assert main_guard(main, ["--vocab", "qwen2", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: Qwen2's real vocabulary needs the BPE ranks shipped with dashscope, which is not "
                   "installed: pip install dashscope==2.0.2")
    assert not (tmp_path / "m").exists()
    # the planner falls back to its estimate and says why
    from training.planner import counting_tokenizer

    tok, how = counting_tokenizer("auto")
    assert tok is None and "pip install dashscope==2.0.2" in how
    # a truncated ranks file is refused, naming the fix
    bad = tmp_path / "qwen.tiktoken"
    bad.write_text("IQ== 0\nIg== 1\n", encoding="utf-8")
    with pytest.raises(VLMStudiesError, match="not Qwen2's 151643 ranks.*pip install dashscope==2.0.2"):
        qwen2_vocab.load_ranks(bad)
