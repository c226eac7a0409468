"""Property-based tests: the config and dataset loaders fail only with their one-sentence errors.

- Config: random TOML documents, near-valid mutations of recipes/demo.toml and random dotted
  overrides either load to a Config whose every field has its declared type, or raise
  ConfigError; a valid Config survives to_toml -> load_config unchanged.
- Dataset: random bytes and random JSON lines either load (and then every non-blank line is
  a problem, a duplicate or a counted skip) or raise DatasetError naming the file and line.

The bugs these properties found in rlvr/config.py are fixed; their cases stay as regression
tests at the end of the file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import pickle
import re
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rlvr.cli import recipe_path
from rlvr.config import LORA_TARGETS, Config, ConfigError, load_config, to_toml, validate
from rlvr.tasks.dataset import DatasetError, DatasetTask
from rlvr.verifiers.base import STATUSES, Verdict

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ------------------------------------------------------------------ the config's shape


def leaves(obj: typing.Any, prefix: str = "") -> list[tuple[str, typing.Any]]:
    """(dotted key, declared type) of every scalar field, read from the dataclasses."""
    out = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += leaves(getattr(obj, f.name), f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, kind))
    return out


LEAVES = leaves(Config())
LEAF_KEYS = [key for key, _ in LEAVES]
TABLES = sorted({key.split(".")[0] for key in LEAF_KEYS if "." in key})
FIELD_NAMES = sorted({part for key in LEAF_KEYS for part in key.split(".")})
DEMO = recipe_path("demo")


def get_leaf(cfg: Config, key: str) -> typing.Any:
    obj: typing.Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def set_leaf(cfg: Config, key: str, value: typing.Any) -> None:
    *path, last = key.split(".")
    obj: typing.Any = cfg
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def assert_well_typed(cfg: Config) -> None:
    """What load_config returns is a Config whose every field has its declared type."""
    assert isinstance(cfg, Config)
    for key, kind in LEAVES:
        value = get_leaf(cfg, key)
        assert isinstance(value, kind), (key, value)
        assert not (kind in (int, float) and isinstance(value, bool)), (key, value)


def known_config_bug(exc: BaseException) -> bool:
    """Failures of known, unfixed bugs in rlvr/config.py (none at present)."""
    return False


def load_or_config_error(load: typing.Callable[[], Config]) -> Config | None:
    try:
        cfg = load()
    except ConfigError as e:
        message = str(e)
        assert message and "Traceback" not in message
        return None
    except Exception as e:  # noqa: BLE001 - any other type is the failure under test
        if known_config_bug(e):
            return None
        raise
    assert_well_typed(cfg)
    return cfg


# ------------------------------------------------------------------ TOML text of any value


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\t" or (ord(ch) >= 0x20 and ch != "\x7f"):
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"'


def toml_value(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(value)


def toml_document(data: dict) -> str:
    """Top-level scalars first, then one [table] per dict value (its values inline)."""
    lines = [
        f"{toml_string(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)
    ]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_string(name)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


TOML_INTS = st.integers(-(2**63), 2**63 - 1)
SCALARS = st.one_of(
    st.booleans(), TOML_INTS, st.floats(), st.text(max_size=12), st.dates(), st.sampled_from(TABLES)
)
VALUES = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)
EDGE_VALUES = st.sampled_from(
    [0, 1, 2, 3, -1, -(2**63), 2**63 - 1, 0.0, -0.5, 0.5, 1.5, 1e308, math.nan, math.inf,
     -math.inf, True, False, "", "x", "arithmetic", "dataset", [], [1, 2], {}, {"a": 1}]
)  # fmt: skip
WILD = st.one_of(EDGE_VALUES, VALUES)
NAMES = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))


# ------------------------------------------------------------------ (a) the config loader


@FUZZ
@given(
    st.dictionaries(
        st.one_of(st.sampled_from(TABLES + FIELD_NAMES), st.text(max_size=8)),
        st.one_of(WILD, st.dictionaries(NAMES, WILD, max_size=4)),
        max_size=5,
    )
)
def test_random_toml_documents_load_or_raise_config_error(tmp_path, data):
    path = tmp_path / "random.toml"
    path.write_text(toml_document(data), encoding="utf-8")
    load_or_config_error(lambda: load_config(path))


@FUZZ
@given(st.data())
def test_mutated_demo_recipe_loads_or_raises_config_error(tmp_path, data):
    import tomllib

    doc = tomllib.loads(DEMO.read_text())
    for _ in range(data.draw(st.integers(1, 4), label="num_mutations")):
        kind = data.draw(st.sampled_from(["set", "set", "unknown", "table", "delete"]))
        if kind == "set":  # a known key, any value: wrong types, negatives, nested tables ...
            key = data.draw(st.sampled_from(LEAF_KEYS))
            *path, last = key.split(".")
            table = doc
            for part in path:
                if not isinstance(table.get(part, {}), dict):
                    break
                table = table.setdefault(part, {})
            else:
                table[last] = data.draw(WILD, label=key)
        elif kind == "unknown":  # an unknown key at the top or inside a table
            where = data.draw(st.sampled_from([None, *TABLES]))
            table = doc if where is None or not isinstance(doc.get(where), dict) else doc[where]
            table[data.draw(st.text(min_size=1, max_size=8))] = data.draw(WILD)
        elif kind == "table":  # a scalar (or a list) where a table belongs
            doc[data.draw(st.sampled_from(TABLES))] = data.draw(st.one_of(EDGE_VALUES, SCALARS))
        else:
            key = data.draw(st.sampled_from(sorted(doc)))
            del doc[key]
    path = tmp_path / "mutated.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    load_or_config_error(lambda: load_config(path))


OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(LEAF_KEYS), WILD.map(toml_value)),
    st.tuples(st.sampled_from(LEAF_KEYS), st.text(max_size=10)),
    st.tuples(st.one_of(st.sampled_from(TABLES), st.text(max_size=10)), st.text(max_size=6)),
    st.tuples(st.sampled_from(LEAF_KEYS).map(lambda k: k + "." + "x"), st.sampled_from(["1", "a"])),
)


@FUZZ
@given(
    st.lists(OVERRIDE, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.sampled_from([None, "--", "--seed", "junk", "-x"]),
)
def test_random_overrides_load_or_raise_config_error(overrides, with_equals, tail):
    args: list[str] = []
    for (key, value), equals in zip(overrides, with_equals):
        args += [f"--{key}={value}"] if equals else [f"--{key}", value]
    if tail is not None:
        args.append(tail)  # a key without a value, or a stray word
    load_or_config_error(lambda: load_config(DEMO, args))
    load_or_config_error(lambda: load_config(None, args))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_random_text_files_load_or_raise_config_error(tmp_path, text):
    path = tmp_path / "junk.toml"
    path.write_text(text, encoding="utf-8")
    load_or_config_error(lambda: load_config(path))


# ------------------------------------------------------------------ (c) the round trip


def valid_value(kind: typing.Any) -> st.SearchStrategy:
    # Strings without control characters: see test_control_characters_survive_to_toml.
    text = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\t"), max_size=12)
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.one_of(st.integers(0, 8), st.integers(0, 2**63 - 1))
    if kind is float:
        return st.one_of(st.floats(0, 1), st.floats(allow_nan=False))  # nan != nan
    if kind is str:
        return text
    if kind is dict:
        scalar = st.one_of(st.booleans(), TOML_INTS, st.floats(allow_nan=False), text)
        inner = st.recursive(
            scalar,
            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=2),
            max_leaves=4,
        )
        return st.dictionaries(text, inner, max_size=3)
    if kind is list:  # lora.target_modules
        return st.lists(st.sampled_from(LORA_TARGETS), min_size=1, unique=True) | st.lists(text)
    raise TypeError(kind)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_valid_config_round_trips_through_toml(tmp_path, data):
    cfg = Config()
    for key, kind in data.draw(st.lists(st.sampled_from(LEAVES), max_size=4, unique=True)):
        set_leaf(cfg, key, data.draw(valid_value(kind), label=key))
    try:
        validate(cfg)
    except ConfigError:
        assume(False)  # not a valid config; the loader tests above cover those
    except Exception as e:  # noqa: BLE001
        assume(not known_config_bug(e))
        raise
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    assert load_config(path) == cfg


# ------------------------------------------------------------------ (b) the dataset loader


def check_dataset(path: Path, on_bad_line: str) -> DatasetTask | None:
    """Load `path`; a failure must be one DatasetError sentence naming the file (and line)."""
    try:
        task = DatasetTask(path=str(path), on_bad_line=on_bad_line)
    except DatasetError as e:
        message = str(e)
        assert "\n" not in message and str(path) in message, message
        if on_bad_line == "skip":
            assert "empty dataset" in message, message
        else:
            assert re.search(rf"{re.escape(str(path))}:\d+ ", message) or (
                "empty dataset" in message
            ), message
        return None
    problems = []
    for split in ("train", "test"):
        num = task.num_problems(split)
        got = task.problems(split, num, seed=1)
        assert len({p.id for p in got}) == num and all(p.split == split for p in got)
        problems += got
    again = pickle.loads(pickle.dumps(task))
    assert again == task
    verdict = again.verify("<think>x</think><answer>1</answer>", problems[0])
    assert isinstance(verdict, Verdict) and verdict.status in STATUSES
    return task


def num_nonblank(content: bytes) -> int:
    content = content.removeprefix(b"\xef\xbb\xbf")
    return sum(1 for line in content.split(b"\n") if line.strip())


def check_both_policies(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    stopped = check_dataset(path, "stop")
    skipped = check_dataset(path, "skip")
    if skipped is not None:  # never lose a line: each is a problem, a duplicate or a skip
        kept = skipped.num_problems("train") + skipped.num_problems("test")
        assert kept + skipped.num_duplicates + skipped.num_skipped == num_nonblank(content)
    if stopped is not None:
        assert skipped is not None and skipped.num_skipped == 0
        assert stopped.problems("train", 0, 0) == [] and stopped.space_size() == kept


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_load_or_name_the_line(tmp_path, content):
    check_both_policies(tmp_path / "bytes.jsonl", content)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=5,
)
ROWS = st.one_of(
    st.fixed_dictionaries(
        {
            "prompt": st.text(max_size=8) | st.sampled_from(["1+1=", "2+2="]),
            "answer": st.one_of(st.text(max_size=6), st.integers(), st.floats(), st.just("2")),
        },
        optional={"extra": JSON_VALUES},
    ),
    st.fixed_dictionaries({"prompt": JSON_VALUES}, optional={"answer": JSON_VALUES}),
    JSON_VALUES,
)
LINES = st.one_of(
    st.tuples(ROWS, st.booleans()).map(lambda r: json.dumps(r[0], ensure_ascii=r[1]).encode()),
    st.sampled_from([b"", b"  ", b"\r", b"{", b'{"prompt": "\\ud800", "answer": "1"}', b"\xff"]),
    st.binary(max_size=8),
)


@FUZZ
@given(st.lists(LINES, max_size=8), st.sampled_from([b"\n", b"\r\n"]))
def test_random_json_lines_load_or_name_the_line(tmp_path, lines, newline):
    check_both_policies(tmp_path / "lines.jsonl", newline.join(lines))


@FUZZ
@given(st.lists(LINES, min_size=1, max_size=8))
def test_stop_names_the_first_line_that_skip_skips(tmp_path, lines):
    path = tmp_path / "first.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        DatasetTask(path=str(path))
    except DatasetError as e:
        match = re.search(rf"{re.escape(str(path))}:(\d+) ", str(e))
        assume(match is not None)  # an empty dataset names no line
        try:
            skipping = DatasetTask(path=str(path), on_bad_line="skip")
        except DatasetError:
            return  # every line was bad
        assert skipping.skipped[0].startswith(f"{path}:{match.group(1)} ")


# ------------------------------------------------------------------ bugs fuzzing found in config.py (fixed)


@pytest.mark.parametrize("key", ["model.num_attention_heads", "model.num_key_value_heads"])
def test_zero_attention_heads_is_a_config_error(key):
    with pytest.raises(ConfigError):
        load_config(None, [f"--{key}", "0"])


def test_non_utf8_config_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("where", ["file", "override"])
def test_deeply_nested_toml_is_a_config_error(tmp_path, where):
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ConfigError):
        if where == "file":
            path = tmp_path / "deep.toml"
            path.write_text(f"[task]\noptions = {{ a = {deep} }}\n")
            load_config(path)
        else:
            load_config(None, ["--seed", deep])


@pytest.mark.parametrize("value", ["two\nlines", "bell\x07", "nul\x00", "del\x7f"])
def test_control_characters_survive_to_toml(tmp_path, value):
    cfg = load_config(None, ["--name", value])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_dates_in_options_survive_to_toml(tmp_path):
    path = tmp_path / "dated.toml"
    path.write_text("[task]\noptions = { since = 2024-01-31, at = 07:30:00 }\n")
    cfg = load_config(path)
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "args",
    [
        ["--model.hidden_size", "-128"],
        ["--model.num_hidden_layers", "0"],
        ["--model.vocab_size", "0"],
        ["--model.intermediate_size", "-1"],
        ["--model.max_position_embeddings", "0"],
        ["--grpo.lr", "inf"],
        ["--pretrain.weight_decay", "nan"],
        ["--pretrain.grad_clip", "-1"],
    ],
    ids=lambda a: a[0][2:] + "=" + a[1],
)
def test_impossible_values_are_config_errors(args):
    with pytest.raises(ConfigError):
        load_config(None, args)
