"""The answer parser on the answers models really give, and on the ones it must refuse."""

import pytest

from scoring.parser import parse_answer

T, F, INVALID = True, False, None

TABLE = [
    # plain answers, any case, punctuation and markdown
    ("True", T), ("False", F), ("true", T), ("false.", F), ("TRUE", T), ("  False\n", F), ("True!", T),
    ("**True**", T), ("`False`", F), ('"True"', T), ("True<|im_end|>", T), ("False.<|endoftext|>", F),
    # yes / no as the first word only
    ("Yes", T), ("No", F), ("yes.", T), ("No.", F), ("Yes, the statement is true.", T),
    ("No, the statement is false.", F), ("No, it's not. False.", F),
    # sentences
    ("The statement is true", T), ("The statement is false.", F), ("This statement is correct.", T),
    ("The statement is incorrect.", F), ("That's wrong.", F), ("It is true that both images show dogs.", T),
    ("Answer: False", F), ("The answer is True.", T), ("The final answer is: false", F),
    ("The left image shows two dogs while the right shows one, so the statement is false.", F),
    ("Both images contain a red shape. True.", T),
    # negation
    ("The statement is not true.", F), ("It isn't true.", F), ("This is not entirely correct.", F),
    ("The statement is not false.", T), ("The statement is true, not false.", T),
    # ambiguous or no answer: invalid, never guessed
    ("", INVALID), ("   ", INVALID), (None, INVALID), ("Maybe", INVALID), ("I cannot tell.", INVALID),
    ("True or False", INVALID), ("true/false", INVALID), ("It is true and false.", INVALID),
    ("Yes, the statement is false.", INVALID), ("No, the statement is true.", INVALID),
    ("I cannot determine whether it is true or false.", INVALID),
    ("No dogs are visible in the left image.", INVALID),  # a statement, not an answer
    ("Right.", INVALID),  # 'right' names the right image in NLVR2
    ("Tru", INVALID), ("Falsehood", INVALID), ("truefalse", INVALID),
    ("ictv animal swer false purple dog", INVALID),  # a mention in no answer position (garbage output)
    ("1", INVALID), ("The left image.", INVALID),
]


@pytest.mark.parametrize("text,want", TABLE)
def test_parser_table(text, want):
    got = parse_answer(text)
    assert got.value is want, f"{text!r} -> {got}"
    assert got.valid == (want is not None)
    assert got.reason  # every decision is explained in predictions.jsonl


def test_invalid_reasons_name_the_problem():
    assert "conflicting" in parse_answer("True or False").reason
    assert parse_answer("").reason == "empty output"
    assert "answer position" in parse_answer("a purple false dog").reason
