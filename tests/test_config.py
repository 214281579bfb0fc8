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


def test_config_and_overrides_without_a_command_line(tmp_path):
    """A library caller (studies/reproduce.py) passes a config file and typed overrides instead of argv."""
    cfg = _yaml(tmp_path, {"model": "m", "lora_r": 4, "targets": ["a", "b"]})
    (a, b), resolved, extra = parse_config((A, B), [], config=cfg, overrides={"lora_r": 16, "use_flag": True})
    assert (a.model, a.use_flag, b.lora_r, b.targets) == ("m", True, 16, ["a", "b"])
    assert resolved["lora_r"] == 16 and extra.config == cfg and extra.cli_keys == frozenset()
    with pytest.raises(VLMStudiesError, match="unknown option 'lora_rank' in overrides; did you mean lora_r"):
        parse_config((A, B), [], config=cfg, overrides={"lora_rank": 16})


def test_a_run_config_saved_before_train_took_options_still_loads():
    """config.yaml of a smoke run made at e6838a2 (when train() parsed argv itself) gives the same options."""
    from pathlib import Path

    from training.options import train_options

    old = Path(__file__).parent / "fixtures" / "run_e6838a2" / "config.yaml"
    opts = train_options(config=old, overrides={"run_name": "again"})
    stored = yaml.safe_load(old.read_text(encoding="utf-8"))
    assert {k for k in stored.keys() | opts.resolved.keys() if stored.get(k) != opts.resolved.get(k)} == {"run_name"}
    assert (opts.args.run_name, opts.lora.lora_r) == ("again", 32)
    assert opts.data.families == ["grounding_left", "grounding_right"]
    assert opts.config == str(old) and opts.root is None and not opts.resume
