"""NLVR2 data: one loader (streaming | cached), normalised examples, prompt templates, a synthetic set."""

from vlm_datasets.nlvr2 import DEFAULT_SOURCE, Example, load_nlvr2, normalise_label, parse_uid
from vlm_datasets.prompts import DEFAULT_TEMPLATE, TEMPLATES, build_inputs, get_template

__all__ = ["DEFAULT_SOURCE", "DEFAULT_TEMPLATE", "Example", "TEMPLATES", "build_inputs", "get_template",
           "load_nlvr2", "normalise_label", "parse_uid"]
