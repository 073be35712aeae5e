"""Tests for corea.parsing (pure functions, no model)."""

from __future__ import annotations

import dataclasses

import pytest

from corea.parsing import (
    ConfidenceParse,
    extract_answer,
    extract_boxed,
    extract_choice,
    parse_confidence,
    parse_confidence_value,
)

# --------------------------------------------------------------------------------------------
# extract_boxed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{42}", "42"),
        (r"so \boxed {42}", "42"),
        (r"so \fbox{42}", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\dfrac{3}{4}}", r"\dfrac{3}{4}"),
        (r"\boxed{\sqrt{\frac{a}{b^{2}}}}", r"\sqrt{\frac{a}{b^{2}}}"),
        (r"first \boxed{5} ... actually \boxed{7}", "7"),
        (r"\boxed{7}\boxed{7}", "7"),
        ("\\boxed{7} \n \\boxed{7}", "7"),
        (r"\boxed{1,234}", "1,234"),
        (r"\boxed{-3}", "-3"),
        (r"\boxed{ $-3.5$ }", "-3.5"),
        (r"$\boxed{12}$.", "12"),
        ("The answer is \\boxed{12}. Confidence: 0.9", "12"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are not counted
        (r"\boxed{x + \boxed{3}}", r"x + \boxed{3}"),  # inner box belongs to the outer one
        (r"put it in \boxed{} ... \boxed{9}", "9"),
        (r"\boxed{9} (format: \boxed{})", "9"),  # empty boxes ignored
        ("no box here", None),
        ("", None),
        (r"\boxed{}", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # truncated final box: the final answer was cut -> None, no fallback to an earlier box
        (r"\boxed{\frac{1}{", None),
        (r"first \boxed{5}, so finally \boxed{\frac{1}{2}", None),
        (r"\boxed{12", None),
        # a complete box written after the truncated one (forced continuation) is used
        ("\\boxed{\\frac{1}{\n\nAnswer: \\boxed{1/2}", "1/2"),
    ],
)
def test_extract_boxed_unclosed(text, expected):
    assert extract_boxed(text) == expected


# --------------------------------------------------------------------------------------------
# extract_choice
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{C}", "C"),
        (r"\boxed{(C)}", "C"),
        (r"\boxed{\text{C}}", "C"),
        (r"\boxed{\textbf{B}}", "B"),
        (r"$\boxed{c}$", "C"),
        (r"\boxed{(C) 42}", "C"),
        (r"\boxed{C) 42}", "C"),
        ("The answer is (C)", "C"),
        ("Answer:\n\nAnswer: C", "C"),
        ("ANSWER: **A**", "A"),
        ("The answer is B. Note A is a distractor", "B"),
        ("Answer: (D) 42", "D"),
        ("**Answer:** B", "B"),
        ("**Final Answer**: D", "D"),
        ("the answer is: [B]", "B"),
        ("The correct answer is option D.", "D"),
        ("The answer choice is (A).", "A"),
        ("Answer: C\nConfidence: 0.9", "C"),
        ("The answer is A. Confidence: 0.7", "A"),
        ("First I thought the answer is A, but the answer is actually... the answer is C.", "C"),
        ("the answer is $\\text{B}$", "B"),
        ("Reasoning...\n\nAnswer:\n C", "C"),  # forced "Answer:" suffix, continued on next line
        # boxed beats text statements
        ("The answer is A.\n\\boxed{D}", "D"),
        # box with a non-letter: fall back to the statement
        ("Answer: (B) 42\n\\boxed{42}", "B"),
        # last line holding only a letter
        ("Let me think.\n\n**C**", "C"),
        ("Let me think.\n(B)\nConfidence: 0.6", "B"),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, 4) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A train leaves the station at 3 pm. I am not sure.",
        "Answer: Apple",
        "The answer is Another one entirely",
        "I think it's A or B, hard to say.",
        "the answer is I'm not sure",
        "",
        r"\boxed{42}",
        r"\boxed{\frac{1}{",
        "Answer: (E)",  # out of range for 4 choices
        r"\boxed{E}",
        "A\nBut wait, let me reconsider everything.",
    ],
)
def test_extract_choice_none(text):
    assert extract_choice(text, 4) is None


def test_extract_choice_out_of_range_letter_falls_back():
    assert extract_choice(r"The answer is B. \boxed{F}", 4) == "B"
    assert extract_choice("Answer: B\nAnswer: Z", 4) == "B"
    assert extract_choice("Answer: E", 5) == "E"
    assert extract_choice("Answer: E", 4) is None


@pytest.mark.parametrize("n", [0, 27, -1])
def test_extract_choice_bad_n(n):
    with pytest.raises(ValueError):
        extract_choice("Answer: A", n)


# --------------------------------------------------------------------------------------------
# extract_answer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"... so \boxed{42}.", "42"),
        (r"\boxed{\dfrac{3}{4}} is the value. Confidence: 0.8", r"\dfrac{3}{4}"),
        (r"\boxed{5} wait, no: \boxed{7}", "7"),
        ("Answer: 42\nConfidence: 0.9", "42"),
        ("The answer is 42. Confidence: 0.9", "42"),
        ("Answer: 42 Confidence: 0.9", "42"),
        ("Final answer: -17", "-17"),
        ("**Final Answer:** $\\frac{1}{2}$", r"\frac{1}{2}"),
        ("### Final Answer: 12.", "12"),
        ("Answer: **1,234**", "1,234"),
        ("So the final answer is 3.5. Let me double check.", "3.5"),
        ("the final answer is $x^2 + 1$.", "x^2 + 1"),
        ("Answer: 5\nAnswer: 6", "6"),
        ("The answer is 5.\nAnswer: 8", "8"),
        ("Answer: 8\nThe answer is 9.", "9"),
        ("Final Answer: The final answer is 42. I hope it is correct.", "42"),
        ("reasoning\n\nAnswer:\n\n  64\nConfidence: 0.5", "64"),
        ("Answer: \\(\\pi\\)", r"\pi"),
        ("The answer is yes.", "yes"),
        # reasoning that mentions "the answer is ..." is not a statement of the answer
        ("Answer: 42\nWe can check that the answer is correct.", "42"),
        ("Answer: 7\nSo the answer is not 5.", "7"),
        # a truncated box followed by a forced "Answer:" continuation
        ("\\boxed{\\frac{1}{\n\nAnswer: 1/2", "1/2"),
        # boxed wins over a later statement
        ("\\boxed{3}\nAnswer: 4", "3"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I computed 42 but I am not done",
        r"\boxed{\frac{1}{",
        "Let me check whether the answer is correct.",
        "Answer:",
        "Answer:\nConfidence: 0.9",
        "Is the answer is 5?",
        "The answer to this depends on x.",
    ],
)
def test_extract_answer_none(text):
    assert extract_answer(text) is None


def test_extract_answer_with_choices():
    choices = ["red", "green", "blue", "black"]
    assert extract_answer(r"\boxed{(B)}", choices) == "B"
    assert extract_answer("The answer is (C)", choices) == "C"
    assert extract_answer(r"\boxed{42}", choices) is None
    assert extract_answer("A train leaves", choices) is None
    assert extract_answer("Answer: D", choices[:3]) is None
    # empty choices behaves like a free-form question
    assert extract_answer(r"\boxed{42}", []) == "42"


# --------------------------------------------------------------------------------------------
# parse_confidence_value
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s, expected",
    [
        (" 0.85\n...", 0.85),
        (" 0.85", 0.85),
        (" 85%", 0.85),
        ("85 %", 0.85),
        ("85 percent", 0.85),
        ("85", 0.85),
        ("85/100", 0.85),
        ("85 / 100", 0.85),
        ("85 out of 100", 0.85),
        ("8/10", 0.8),
        ("9 out of 10", 0.9),
        ("0.9.", 0.9),
        ("**0.8**", 0.8),
        ("$0.8$", 0.8),
        ("`0.7`", 0.7),
        (".85", 0.85),
        ("0,85", 0.85),
        ("1", 1.0),  # 1 means certain, not 1 %
        ("1.0", 1.0),
        ("0", 0.0),
        ("0%", 0.0),
        ("100", 1.0),
        ("100%", 1.0),
        ("2", 0.02),
        ("50", 0.5),
        ("about 0.7", 0.7),
        ("~0.6", 0.6),
        ("0.85 (85%)", 0.85),
        ("0.8 because step 2 is shaky", 0.8),
        ("\n\n 0.75", 0.75),
        (r"\boxed{0.9}", 0.9),
    ],
)
def test_parse_confidence_value(s, expected):
    r = parse_confidence_value(s)
    assert r.value == pytest.approx(expected)
    assert r.note is None


@pytest.mark.parametrize(
    "s, note",
    [
        ("", "missing"),
        ("   \n  ", "missing"),
        ("**", "missing"),
        ("high", "not a number: 'high'"),
        (" very confident", "not a number: 'very confident'"),
        ("high (0.9)", "not a number: 'high (0.9)'"),  # the number must start the value
        ("I'd say 0.8", "not a number: \"I'd say 0.8\""),
        ("150", "out of range: 150"),
        ("150%", "out of range: 150%"),
        ("-0.5", "out of range: -0.5"),
        ("-5%", "out of range: -5%"),
        ("120/100", "out of range: 120/100"),
        ("1.5", "out of range: 1.5"),  # ambiguous: neither a probability nor a sensible percent
        ("1.99", "out of range: 1.99"),
        ("1000", "out of range: 1000"),
        ("5/0", "not a number: '5/0'"),
    ],
)
def test_parse_confidence_value_none(s, note):
    assert parse_confidence_value(s) == ConfidenceParse(None, note)


def test_confidence_parse_is_frozen():
    r = ConfidenceParse(0.5, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 0.6  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# parse_confidence
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{3}\nConfidence: 0.85", 0.85),
        ("\\boxed{3}\nConfidence: 85%", 0.85),
        ("\\boxed{3}\nconfidence: 85", 0.85),
        ("\\boxed{3}\nConfidence: 85/100", 0.85),
        ("\\boxed{3}\n**Confidence:** 0.9", 0.9),
        ("\\boxed{3}\n**Confidence**: 0.9", 0.9),
        ("\\boxed{3}\nConfidence level: 0.9", 0.9),
        ("\\boxed{3}\nConfidence score: 0.9", 0.9),
        ("\\boxed{3}\nConfidence = 0.9", 0.9),
        ("\\boxed{3}\nCONFIDENCE: 0.9", 0.9),
        ("\\boxed{3}\nConfidence (0-1): 0.6", 0.6),
        ("\\boxed{3}\nConfidence: 0.85.", 0.85),
        ("\\boxed{3}\nConfidence: 1", 1.0),
        ("\\boxed{3}\nConfidence: 0", 0.0),
        ("\\boxed{3}\n- Confidence: 0.4", 0.4),
        ("Confidence: 0.8\n\\boxed{3}", 0.8),  # before the answer
        ("The answer is 42. Confidence: 0.9", 0.9),
        ("Answer: 42\nConfidence: 0.9", 0.9),
        ("\\boxed{3}\nConfidence:\n0.7", 0.7),  # value on the next line
        ("\\boxed{3}\n**Confidence:**\n0.7", 0.7),
        # the last label wins
        ("Confidence: 0.2\n...\n\\boxed{3}\nConfidence: 0.9", 0.9),
        # prose mentions are never read when a label exists
        ("I have low confidence in step 2, around 30% sure.\n\\boxed{3}\nConfidence: 0.85", 0.85),
        ("With confidence 0.3 we can say...\n\\boxed{3}\nConfidence: 0.7", 0.7),
        ("\\boxed{3}\nConfidence: 0.7\n(I have low confidence in step 2, around 30% sure)", 0.7),
        # forced suffix appended after a free completion
        ("...\\boxed{3}\nConfidence: 0.85\nThe end.", 0.85),
    ],
)
def test_parse_confidence(text, expected):
    r = parse_confidence(text)
    assert r.value == pytest.approx(expected)
    assert r.note is None


@pytest.mark.parametrize(
    "text, note",
    [
        ("", "missing"),
        ("\\boxed{3}", "missing"),
        ("\\boxed{3}\nConfidence:", "missing"),
        ("\\boxed{3}\nConfidence:   \n", "missing"),
        ("Confidence:\n\\boxed{3}", "missing"),  # the next line is the answer, not a value
        ("\\boxed{3}\nConfidence: high", "not a number: 'high'"),
        ("\\boxed{3}\nConfidence: 150", "out of range: 150"),
        ("\\boxed{3}\nConfidence: 1.5", "out of range: 1.5"),
        ("\\boxed{3}\nConfidence: -0.2", "out of range: -0.2"),
        # only prose mentions -> not read (policy: only labelled statements count)
        ("I have low confidence in step 2, around 30% sure. \\boxed{3}", "missing"),
        ("with confidence 0.3 we can proceed. \\boxed{3}", "missing"),
        ("Overconfidence: 0.9 is bad. \\boxed{3}", "missing"),
        # last label wins even when unusable; earlier values are not a fallback
        ("Confidence: 0.8\n\\boxed{3}\nConfidence: high", "not a number: 'high'"),
    ],
)
def test_parse_confidence_none(text, note):
    assert parse_confidence(text) == ConfidenceParse(None, note)


# --------------------------------------------------------------------------------------------
# robustness: long / adversarial inputs must not trigger regex backtracking blow-ups
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Answer:" + " " * 20000,
        "answer: " + "* " * 5000 + "x",
        "\\boxed{" * 3000,
        "}" * 5000 + "{" * 5000 + "\\boxed{1}",
        "confidence level" + " " * 20000,
        "Confidence (" + " " * 20000,
        "Confidence: " + "*" * 20000,
        "answer is " * 5000,
        "Answer: " + "$" * 20000 + "a",
    ],
)
def test_adversarial_inputs_are_fast(text):
    import time

    t0 = time.perf_counter()
    extract_boxed(text)
    extract_choice(text, 4)
    extract_answer(text)
    parse_confidence(text)
    parse_confidence_value(text)
    assert time.perf_counter() - t0 < 0.5


# --- a confidence the small model put in a box after its boxed answer -------------------------

BOXED_CONF = (r"48 + 24 = 72, so \[ \boxed{72} \]" "\n\n"
              r"To state how likely it is that your final answer is correct, as a probability "
              r'between 0 and 1, written as "Confidence: " followed by that number, the '
              r"probability is: \[ \boxed{1} \]")


def test_confidence_in_a_last_box_is_not_the_answer():
    assert extract_answer(BOXED_CONF) == "72"
    assert parse_confidence(BOXED_CONF).value == 1.0


def test_boxed_confidence_without_label():
    text = "So the answer is \\boxed{72}.\nMy confidence in this answer: \\boxed{0.85}"
    assert extract_answer(text) == "72"
    assert parse_confidence(text).value == 0.85


@pytest.mark.parametrize("text,answer", [
    # a probability question's answer stays the answer: no "confidence" between the boxes
    (r"First guess \boxed{1/2}; recomputing, the probability is \boxed{1/4}", "1/4"),
    # one box only: it is the answer even if "confidence" was said before it
    (r"With confidence we compute 0.3 + 0.4 = \boxed{0.7}", "0.7"),
    # the last box is not a confidence value
    (r"\boxed{3} ... confidence aside, correcting myself: \boxed{x+1}", "x+1"),
])
def test_confidence_box_rule_leaves_real_answers_alone(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text,answer", [
    ("So the final answer is \\boxed{4", None),                      # cut inside the box
    ("Answer: 3. Then the final answer is \\boxed{4", None),         # an earlier statement is stale
    ("So the final answer is \\boxed{4\n\nAnswer: 42", "42"),       # forced Answer: continuation
])
def test_truncated_box_is_no_answer(text, answer):
    assert extract_answer(text) == answer


# real completions of the embedded 0.5B seen by a new user (both were kept as "confident" with a
# wrong answer before this rule)
@pytest.mark.parametrize("text,answer,confidence", [
    (r"17 * 23 = 391, so the final answer is \(391\). \boxed{Confidence: 0.816}", "391", 0.816),
    (r"6*7 = 42. The answer is 42. To state how likely it is that your final answer is correct, "
     r"as a probability between 0 and 1, the probability is \(\boxed{1}\)", "42", 1.0),
    # only a confidence box and no answer statement: no answer (the forced suffix will ask)
    (r"I think so. My confidence: \boxed{0.7}", None, 0.7),
])
def test_single_confidence_box(text, answer, confidence):
    assert extract_answer(text) == answer
    assert parse_confidence(text).value == confidence


@pytest.mark.parametrize("text,answer", [
    (r"The probability of two heads is \boxed{1/4}", "1/4"),
    (r"The probability that the chosen ball is red is \boxed{\frac{3}{5}}", "\\frac{3}{5}"),
])
def test_probability_answers_stay_answers(text, answer):
    assert extract_answer(text) == answer


def test_statement_before_a_confidence_box_is_not_a_math_opener():
    # a real embedded-0.5B ending (GSM8K test item 1): the only box holds a "probability of being
    # correct"; the statement before it leads into the box, so there is no answer (the forced
    # "Answer:" suffix then asks for one)
    text = ("the probability that the total revenue is exactly $90 is:\n\\[ \\frac{90}{90} = 1 \\]\n\n"
            "To check that Janet's final answer is correct, the final answer is:\n\\[ \\boxed{1} \\]")
    assert extract_answer(text) is None
    assert parse_confidence(text).value == 1.0


@pytest.mark.parametrize("text,answer", [
    # real embedded-0.5B ending (GSM8K test item 4)
    ("Since the final answer is 800 cups, which is greater than 800, the probability that the "
     "final answer is correct is:\n\\[\n\\boxed{1}\n\\]", "800 cups"),
    ("The answer is 1, 2, 3", "1, 2, 3"),
    ("The answer is 1,234, as computed", "1,234"),
])
def test_answer_statement_stops_at_a_clause(text, answer):
    assert extract_answer(text) == answer


# -- defects found while trying the product (issue: a deciding signal you can trust) ----------

@pytest.mark.parametrize("text, want", [
    ("So the total is 73. Final Answer: **73**", "73"),
    ("Adding them up gives 5 + 7 = 12. **Final answer:** 12", "12"),
    ("Final Answer: **73**\nConfidence: 0.9", "73"),
])
def test_final_answer_label_inside_a_line(text, want):
    assert extract_answer(text) == want


def test_a_final_answer_label_in_prose_without_a_value_is_not_an_answer():
    assert extract_answer("I will now compute the final answer: ") is None


@pytest.mark.parametrize("s, want", [
    (" 1e-1", 0.1), (" 9.5E-1", 0.95), (" 2.5e-1.", 0.25),
    (" 0.95%", 0.95), (" .8%", 0.8), (" 0,9%", 0.9),   # a fraction written with "%"
    (" 95%", 0.95), (" 1%", 0.01), (" 0%", 0.0), (" 100%", 1.0),
])
def test_scientific_notation_and_fraction_percent(s, want):
    got = parse_confidence_value(s)
    assert got.value == pytest.approx(want) and got.note is None


def test_scientific_notation_out_of_range_says_so():
    assert parse_confidence_value(" 1e5") == ConfidenceParse(None, "out of range: 1e5")
