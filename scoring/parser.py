"""Turn a generated answer into True / False / invalid, and never guess.

Models answer a "True or False" prompt in many ways: "True", "false.", "**True**", "Yes",
"The statement is true.", "Answer: False", "It is not true that ...", "..., so the statement is
false." `parse_answer` accepts these and marks everything else invalid, with a reason that goes
into predictions.jsonl so the parser can be audited.

Rules:
- truth words: true/false, correct/incorrect, wrong (= false); a negator earlier in the same clause,
  at most three words back, flips one ("not true", "isn't correct", "is not entirely true").
- yes/no count only as the first word and followed by nothing or punctuation ("Yes", "No.",
  "no, ..."): "No dogs are visible" is a statement, not an answer.
- "right" is never an answer word: in NLVR2 it names the right image.
- a truth word is an *answer* only where answers go: first word of the response, last word, after
  a form of "to be" ("the statement is true", "it's false") or after "answer" ("Answer: True").
  A truth word anywhere else ("... purple false dog ...") is only a *mention*.
- valid = at least one answer, and every answer and mention agree. "True or False",
  "true and false", "Yes, it is false" are ambiguous; "maybe", "cannot tell", empty output and
  text with no answer are invalid.

Bump PARSER_VERSION whenever these rules change: predictions record it (generate mode), and the
tasks that use the parser must bump their version too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PARSER_VERSION = 1

TRUTH_WORDS = {"true": True, "false": False, "correct": True, "incorrect": False, "wrong": False}
LEADING_WORDS = {"yes": True, "no": False}
NEGATORS = {"not", "never", "hardly"}
COPULAS = {"is", "are", "was", "were", "be", "being", "been", "it's", "that's", "statement's", "answer"}
FILLERS = {"not", "entirely", "completely", "totally", "absolutely", "definitely", "indeed", "actually", "also",
           "therefore", "clearly", "thus", "so", "simply", "fully", "quite"}
# Chat tokens that survive decoding when special tokens are kept, and markdown emphasis.
_NOISE = re.compile(r"<\|[a-z_]+\|>|</?s>|[*_`#\"]")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_CLAUSE = re.compile(r"[.,;:!?\n()]")


@dataclass(frozen=True)
class ParsedAnswer:
    """`value` is True/False, or None when the answer is invalid; `reason` says why (for audits)."""

    value: bool | None
    reason: str

    @property
    def valid(self) -> bool:
        return self.value is not None


def _clause_before(clean: str, start: int) -> list[str]:
    return _WORD.findall(_CLAUSE.split(clean[:start])[-1])


def _negated(before: list[str]) -> bool:
    return any(w in NEGATORS or w.endswith("n't") for w in before[-3:])


def _in_answer_position(words: list[str], i: int, before: list[str]) -> bool:
    if i == 0 or i == len(words) - 1:
        return True
    # "is true", "is not entirely true", "isn't true", "Answer: True", "the answer is, clearly, false"
    j = len(before) - 1
    while j >= 0 and before[j] in FILLERS:
        j -= 1
    prev = before[j] if j >= 0 else (words[i - 1] if i > 0 else "")
    return prev in COPULAS or prev.endswith("n't")


def parse_answer(text: str | None) -> ParsedAnswer:
    """Parse a model's answer to a True/False question (see the module docstring for the rules)."""
    if text is None:
        return ParsedAnswer(None, "no output")
    clean = _NOISE.sub(" ", str(text)).lower().replace("\u2019", "'")
    if not clean.strip():
        return ParsedAnswer(None, "empty output")
    tokens = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(clean)]
    words = [w for w, _, _ in tokens]
    answers: list[tuple[str, bool]] = []
    mentions: list[tuple[str, bool]] = []
    if words and words[0] in LEADING_WORDS:
        after = clean[tokens[0][2]:].lstrip(" \t")
        if not after or not after[0].isalnum():  # "Yes", "No.", "no, it is" - not "No dogs are visible"
            answers.append((words[0], LEADING_WORDS[words[0]]))
    for i, (w, start, _) in enumerate(tokens):
        if w not in TRUTH_WORDS:
            continue
        before = _clause_before(clean, start)
        value, name = TRUTH_WORDS[w], w
        if _negated(before):
            value, name = not value, f"not {w}"
        (answers if _in_answer_position(words, i, before) else mentions).append((name, value))
    if not answers:
        return ParsedAnswer(None, "no answer word in an answer position" if mentions else "no answer word")
    found = answers + mentions
    if len({v for _, v in found}) > 1:
        return ParsedAnswer(None, "conflicting answers: " + ", ".join(n for n, _ in found))
    return ParsedAnswer(answers[0][1], "answer: " + ", ".join(n for n, _ in found))
