"""Action extraction from model responses: `<think>…</think><action>…</action>`."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from turnrl.agents.actions import FORMAT_HINT, ParsedResponse, invalid_response_observation, parse_response

# The same notion of "a tag" the parser has (case-insensitive, Unicode rules included).
_TAG = re.compile(r"</?action>", re.IGNORECASE)

# Arbitrary text, plus text built from the tags so that the parser's edges are hit often.
TAG_SOUP = st.lists(
    st.one_of(
        st.sampled_from(["<think>", "</think>", "<action>", "</action>", "<ACTION>", "</Action>", "<", ">", "/"]),
        st.text(max_size=8),
    ),
    max_size=12,
).map("".join)


@pytest.mark.parametrize(
    ("text", "action", "think"),
    [
        ("<think>the lamp is off</think><action>toggle 2</action>", "toggle 2", "the lamp is off"),
        ("<action>guess 7</action>", "guess 7", None),                       # <think> is optional
        ("<think>a</think>\n<action>  toggle 1 \n</action>", "toggle 1", "a"),  # whitespace stripped
        ("<think>  padded  </think><action>x</action>", "x", "padded"),
        ("<ACTION>Toggle 3</Action>", "Toggle 3", None),                      # tags are case-insensitive
        ("<Think>hm</THINK><aCtIoN>go</AcTiOn>", "go", "hm"),
        ("<action>first</action> then <action>second</action>", "first", None),  # first complete pair wins
        ("preamble <action>look</action> trailing words", "look", None),
        ("<action>two\nlines</action>", "two\nlines", None),                 # the action may span lines
        ("<action>a <b> c</action>", "a <b> c", None),
        ("<action><action>x</action>", "<action>x", None),                   # shortest match from the first tag
    ],
)
def test_parse_response_valid(text, action, think):
    parsed = parse_response(text)
    assert parsed == ParsedResponse(action, think, None)
    assert parsed.valid


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no <action>"),
        ("toggle 2", "no <action>"),                                  # a bare action is not accepted
        ("<think>only thinking</think>", "no <action>"),
        ("<action>toggle 2", "no <action>"),                          # unclosed tag
        ("toggle 2</action>", "no <action>"),                         # closing tag only
        ("</action>toggle 2<action>", "no <action>"),                 # tags in the wrong order
        ("<action></action>", "empty"),
        ("<action>  \n\t </action>", "empty"),                        # whitespace only is empty
        ("<action></action><action>later</action>", "empty"),         # the first complete pair decides
    ],
)
def test_parse_response_invalid(text, error):
    parsed = parse_response(text)
    assert parsed.action is None and not parsed.valid
    assert error in parsed.error


def test_think_is_kept_when_the_action_is_missing():
    parsed = parse_response("<think>I am not sure</think> maybe toggle 1")
    assert parsed.think == "I am not sure" and parsed.action is None


def test_unclosed_think_is_no_think():
    parsed = parse_response("<think>never closed <action>toggle 1</action>")
    assert parsed.think is None and parsed.action == "toggle 1"


def test_invalid_response_observation_mentions_the_format():
    error = parse_response("no tags here").error
    observation = invalid_response_observation(error)
    assert observation.startswith("Invalid response")
    assert error in observation
    assert FORMAT_HINT in observation
    assert "<action>" in observation and "</action>" in observation and "<think>" in observation


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), TAG_SOUP))
def test_arbitrary_text_never_raises(text):
    parsed = parse_response(text)
    assert parsed.valid == (parsed.action is not None) == (parsed.error is None)
    if parsed.valid:
        assert parsed.action == parsed.action.strip() and parsed.action
    invalid_response_observation(parsed.error or "")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), TAG_SOUP))
def test_wrapped_text_is_the_action(text):
    assume(_TAG.search(text) is None)
    parsed = parse_response(f"<think>x</think><action>{text}</action>")
    if text.strip():
        assert parsed.action == text.strip()
        assert parsed.error is None
    else:
        assert parsed.action is None and not parsed.valid
    assert parsed.think == "x"
