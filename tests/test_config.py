"""Config loading: TOML files, dotted overrides, and one clear sentence per mistake."""

from __future__ import annotations

import pytest

from rlvr.cli import main, recipe_path
from rlvr.config import Config, ConfigError, describe, field_docs, load_config, to_toml


def write(tmp_path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_demo_recipe_loads_and_round_trips(tmp_path):
    cfg = load_config(recipe_path("demo"))
    assert cfg.task.name == "arithmetic"
    again = load_config(write(tmp_path, to_toml(cfg)))
    assert again == cfg


def test_overrides_are_typed(tmp_path):
    cfg = load_config(
        None, ["--grpo.beta", "0.02", "--seed=3", "--grpo.advantage", "dr_grpo", "--name", "x"]
    )
    assert (
        cfg.grpo.beta == 0.02
        and cfg.seed == 3
        and cfg.grpo.advantage == "dr_grpo"
        and cfg.name == "x"
    )
    assert load_config(None, ["--grpo.beta", "1"]).grpo.beta == 1.0  # ints widen to float


@pytest.mark.parametrize(
    "args, words",
    [
        (["--grpo.bta", "0.1"], ["grpo.bta", "beta"]),
        (["--grpo.beta", "abc"], ["grpo.beta", "float"]),
        (["--seed", "1.5"], ["seed", "int"]),
        (["--grpo.group_size", "1"], ["grpo.group_size", "at least 2"]),
        (["--grpo.num_minibatches", "3"], ["grpo.num_minibatches"]),
        (["--grpo.epsilon", "1.5"], ["grpo.epsilon"]),
        (["--grpo.min_new_tokens", "65"], ["grpo.min_new_tokens", "grpo.max_new_tokens"]),
        (["--grpo.mask_truncated", "true", "--grpo.ignore_eos", "true"], ["grpo.mask_truncated"]),
        (["--grpo.mask_truncated", "true", "--grpo.min_new_tokens", "64"], ["grpo.mask_truncated"]),
        (["--task.name", "chess"], ["task.name", "arithmetic"]),
        (["--model.num_key_value_heads", "3"], ["num_key_value_heads"]),
        (["--grpo", "1"], ["grpo", "table"]),
        (["--grpo.beta"], ["--grpo.beta", "no value"]),
    ],
)
def test_bad_overrides_name_the_key(args, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, args)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'grpo.epsilon_hgh'.*epsilon_high"):
        load_config(write(tmp_path, "[grpo]\nepsilon_hgh = 0.3\n"))
    with pytest.raises(ConfigError, match="pretrain.steps.*int"):
        load_config(write(tmp_path, '[pretrain]\nsteps = "many"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[grpo\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_every_field_has_a_docstring():
    for key, _kind, _default, doc in describe(Config):
        assert doc, f"config field {key} has no docstring"
    assert "k3" in field_docs(type(Config().grpo))["beta"]


def test_cli_exits_2_with_one_sentence(capsys, tmp_path):
    code = main(
        ["train", str(recipe_path("demo")), "--grpo.group_size", "1", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("rlvr: ") and "grpo.group_size" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # stopped before any work
