"""Options from YAML + command line: overrides win, unknown or misspelt keys are clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from utils.config import parse_config, save_resolved
from utils.errors import VLMStudiesError


@dataclass
class A:
    model: str = "local:tiny"
    answer_mode: str = "score"
    use_flag: bool = False


@dataclass
class B:
    lora_r: int = 8
    targets: list[str] = field(default_factory=lambda: ["q_proj"])


def _yaml(tmp_path, data, text=None):
    p = tmp_path / "c.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data), encoding="utf-8")
    return str(p)


def test_yaml_then_cli_override_and_sections(tmp_path):
    cfg = _yaml(tmp_path, {"model": "m1", "lora": {"lora_r": 16}, "use_flag": True})
    (a, b), resolved, _ = parse_config((A, B), ["--config", cfg, "--lora_r", "32"])
    assert (a.model, a.use_flag, b.lora_r) == ("m1", True, 32)
    assert resolved["lora_r"] == 32 and resolved["targets"] == ["q_proj"]
    (a, _), _, _ = parse_config((A, B), ["--config", cfg, "--use_flag", "false"])
    assert a.use_flag is False
    save_resolved(resolved, tmp_path / "out.yaml", header="made by a test")
    text = (tmp_path / "out.yaml").read_text(encoding="utf-8")
    assert text.startswith("# made by a test") and yaml.safe_load(text)["lora_r"] == 32


@pytest.mark.parametrize("argv,match", [
    (["--lora_rr", "4"], "unknown option 'lora_rr' in command line; did you mean lora_r"),
    (["--answer_mod", "generate"], "unknown option 'answer_mod'.*did you mean answer_mode"),  # no silent abbreviation
])
def test_unknown_cli_flags(argv, match):
    with pytest.raises(VLMStudiesError, match=match):
        parse_config((A, B), argv)


def test_unknown_yaml_key_and_bad_files(tmp_path):
    with pytest.raises(VLMStudiesError, match=r"unknown option 'modle' in .*c.yaml; did you mean model"):
        parse_config((A, B), ["--config", _yaml(tmp_path, {"modle": "x"})])
    with pytest.raises(VLMStudiesError, match="is not valid YAML at line 2"):
        parse_config((A, B), ["--config", _yaml(tmp_path, None, "model: a\n  bad: [\n")])
    with pytest.raises(VLMStudiesError, match="must be a mapping"):
        parse_config((A, B), ["--config", _yaml(tmp_path, None, "- a\n- b\n")])
    with pytest.raises(VLMStudiesError, match="does not exist"):
        parse_config((A, B), ["--config", str(tmp_path / "missing.yaml")])
