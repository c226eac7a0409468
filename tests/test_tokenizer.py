"""CharTokenizer: ids of special tokens, round trips, errors, save/load."""

import pytest

from rlvr.tokenizer import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    EMPTY_THINK,
    EOS,
    THINK_CLOSE,
    THINK_OPEN,
    CharTokenizer,
    format_prompt,
)

EXAMPLE = (
    format_prompt("37+6*8-45=")
    + "<think>6*8=48\n37+48=85\n85-45=40</think><answer>40</answer><eos>"
)


def test_special_token_ids_are_fixed():
    tok = CharTokenizer()
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert (tok.think_open_id, tok.think_close_id) == (3, 4)
    assert (tok.answer_open_id, tok.answer_close_id) == (5, 6)
    assert tok.token_to_id("\n") == 7 and tok.token_to_id(" ") == 8 and tok.token_to_id("~") == 102
    assert tok.vocab_size == 7 + 1 + 95


def test_round_trip_with_special_tokens():
    tok = CharTokenizer()
    ids = tok.encode(EXAMPLE)
    assert tok.decode(ids) == EXAMPLE
    # Each special token is one id; everything else is one id per character.
    specials = ["<bos>", THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, EOS]
    assert len(ids) == len(EXAMPLE) - sum(len(s) - 1 for s in specials)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids, skip_special=True) == "37+6*8-45=\n6*8=48\n37+48=85\n85-45=40" + "40"


def test_partial_tags_are_plain_characters():
    tok = CharTokenizer()
    text = "<thin <answer <pad"
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.encode(EMPTY_THINK) == [tok.think_open_id, tok.think_close_id]


def test_unknown_character_names_character_and_position():
    tok = CharTokenizer()
    with pytest.raises(ValueError, match=r"'é'.*position 3"):
        tok.encode("abcé")
    with pytest.raises(ValueError, match="position 0"):
        tok.encode("\t")


def test_decode_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharTokenizer().decode([1, 5000])


def test_save_load(tmp_path):
    tok = CharTokenizer()
    path = tok.save(tmp_path / "ckpt")
    assert path.name == "rlvr_tokenizer.json"
    loaded = CharTokenizer.load(tmp_path / "ckpt")
    assert loaded.tokens == tok.tokens
    assert loaded.encode(EXAMPLE) == tok.encode(EXAMPLE)


def test_custom_characters_save_load(tmp_path):
    tok = CharTokenizer(chars="0123456789+-*=\n")
    assert tok.vocab_size == 7 + 15
    assert tok.decode(tok.encode("<bos>1+2=\n<think></think>")) == "<bos>1+2=\n<think></think>"
    with pytest.raises(ValueError, match="'a'"):
        tok.encode("a")
    tok.save(tmp_path)
    assert CharTokenizer.load(tmp_path).tokens == tok.tokens


def test_load_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="rlvr_tokenizer.json"):
        CharTokenizer.load(tmp_path)


def test_format_prompt():
    assert format_prompt("1+2=") == "<bos>1+2=\n"
