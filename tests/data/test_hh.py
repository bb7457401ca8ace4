import pytest

from paretoalign.data import is_hh_text, parse_hh_dialogue
from paretoalign.errors import InputError
from tests.data.helpers import HH_MESSAGES, HH_PROMPT


def test_multi_turn_prompt_drops_the_generation_slot():
    assert parse_hh_dialogue(HH_PROMPT) == HH_MESSAGES


def test_full_conversation_keeps_the_final_reply():
    messages = parse_hh_dialogue(HH_PROMPT + " 4.")
    assert messages[-1] == {"role": "assistant", "content": "4."}
    assert messages[:-1] == HH_MESSAGES


def test_leading_text_without_blank_lines_and_inline_markers():
    # A 'Human:' not preceded by a blank line is text of the turn, as in the original data.
    messages = parse_hh_dialogue("Human: say 'Human: hi'\n\nAssistant:")
    assert messages == [{"role": "user", "content": "say 'Human: hi'"}]


def test_no_human_turn_is_an_error():
    with pytest.raises(InputError, match="Human"):
        parse_hh_dialogue("\n\nAssistant: hello", location="f.jsonl:3")
    with pytest.raises(InputError) as err:
        parse_hh_dialogue("Some instruction\n\nHuman: hi\n\nAssistant:", location="f.jsonl:3")
    assert err.value.path == "f.jsonl" and err.value.line == 3


def test_is_hh_text():
    assert is_hh_text(HH_PROMPT)
    assert is_hh_text("Human: hi\n\nAssistant:")
    assert not is_hh_text("What is 2+2?")
    assert not is_hh_text("Continue the dialogue:\n\nHuman: hi\n\nAssistant:")
    assert not is_hh_text(["not", "text"])
