"""The data-parallel learner (learner.processes = N, gloo on the CPU).

- one update over 2 processes equals the single-process update on the same batch (weights
  within 1e-6, the logged statistics too), for the token-mean and the per-sequence losses,
  with the reference and the importance correction computed row-split, and with FSDP;
- its state after a step resumes exactly: steps 2-3 from that state equal an unbroken run;
- a whole `rlvr train` with learner.processes = 2 runs through the same loop;
- a learner.processes the batch cannot feed is a config error before any work.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from rlvr.config import Config
from rlvr.learning.distributed import DataParallel, DistributedLearner
from rlvr.learning.learner import GRPOLearner
from rlvr.model import ModelConfig, Transformer
from rlvr.sampling.rollout import Episode
from rlvr.tasks import Problem
from rlvr.verifiers import Verdict

PAD = 0
WEIGHTS = {"accuracy": 1.0, "format": 0.1}


def tiny_config(fsdp: bool = False, **grpo) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=64)  # fmt: skip
    cfg.grpo.num_prompts, cfg.grpo.group_size, cfg.grpo.max_new_tokens = 4, 4, 12
    cfg.grpo.lr = 1e-3  # large enough that a wrong split would show far above 1e-6
    cfg.learner.processes, cfg.learner.threads, cfg.learner.fsdp = 2, 1, fsdp
    for key, value in grpo.items():
        setattr(cfg.grpo, key, value)
    return cfg


def episodes(cfg: Config, seed: int) -> list[Episode]:
    """A random batch: prompts and completions of varied lengths, rewards that differ within
    each group, sampler logprobs near the model's."""
    rng = random.Random(seed)
    out = []
    for p in range(cfg.grpo.num_prompts):
        problem = Problem(f"p{p}", "1+1", "2", "arithmetic", "train")
        prompt = [rng.randrange(1, 32) for _ in range(rng.randint(3, 6))]
        for _ in range(cfg.grpo.group_size):
            completion = [rng.randrange(1, 32) for _ in range(rng.randint(1, 12))]
            accuracy = float(rng.random() < 0.5)
            out.append(Episode(
                problem=problem, prompt_ids=prompt, completion_ids=completion,
                logprobs=[-3.5 + rng.uniform(-0.3, 0.3) for _ in completion],
                finish_reason="length" if len(completion) == 12 else "stop", policy_version=0,
                response="", verdict=Verdict(accuracy, "correct" if accuracy else "wrong"),
                reward=accuracy + 0.1 * rng.random(), parts={"accuracy": accuracy, "format": 0.0},
            ))  # fmt: skip
    return out


def mean_stats(result) -> dict[str, float]:
    return {key: sum(v) / len(v) for key, v in result.stats.items()}


def assert_close_models(a: torch.nn.Module, b: torch.nn.Module, tol: float) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert (pa - pb).abs().max().item() <= tol, name


@pytest.mark.parametrize(
    "grpo",
    [
        {"loss_type": "dapo", "num_minibatches": 2, "beta": 0.04},
        {"loss_type": "grpo", "is_level": "token", "num_iterations": 1, "num_prompts": 5},
        {"fsdp": True, "loss_type": "dapo", "num_minibatches": 2, "beta": 0.04},
    ],
    ids=["dapo-minibatches-reference", "grpo-importance-uneven", "fsdp"],
)
def test_two_processes_make_the_single_process_update(grpo):
    cfg = tiny_config(**grpo)
    torch.manual_seed(0)
    start = Transformer(cfg.model)
    batch = episodes(cfg, seed=1)
    torch.set_num_threads(1)

    single = copy.deepcopy(start)
    expected = GRPOLearner(single, cfg, PAD, WEIGHTS).train_step(batch, step=1)
    split = copy.deepcopy(start)
    learner = DistributedLearner(split, cfg, PAD, WEIGHTS)
    try:
        got = learner.train_step(batch, step=1)
        sharded = type(next(learner.learner.policy.parameters())).__name__ == "DTensor"
        assert sharded == cfg.learner.fsdp
    finally:
        learner.close()

    moved = max((a - b).abs().max().item() for a, b in zip(single.parameters(), start.parameters()))
    assert moved > 1e-4, "the update moved the weights"
    assert_close_models(split, single, tol=1e-6)
    assert got.updates == expected.updates and got.skipped == expected.skipped == 0
    want = mean_stats(expected)
    for key, value in mean_stats(got).items():
        assert value == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    assert set(mean_stats(got)) == set(want)


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_data_parallel_state_resumes_exactly(fsdp):
    cfg = tiny_config(fsdp=fsdp, num_minibatches=2)
    torch.manual_seed(0)
    start = Transformer(cfg.model)
    batches = [episodes(cfg, seed=s) for s in (1, 2, 3)]

    unbroken = copy.deepcopy(start)
    learner = DistributedLearner(unbroken, cfg, PAD, WEIGHTS)
    try:
        learner.train_step(batches[0], 1)
        saved = copy.deepcopy((unbroken.state_dict(), learner.state_dict()))
        for step in (2, 3):
            learner.train_step(batches[step - 1], step)
    finally:
        learner.close()

    resumed = copy.deepcopy(start)
    resumed.load_state_dict(saved[0])
    learner = DistributedLearner(resumed, cfg, PAD, WEIGHTS)
    try:
        learner.load_state_dict(saved[1])
        for step in (2, 3):
            learner.train_step(batches[step - 1], step)
    finally:
        learner.close()
    assert_close_models(resumed, unbroken, tol=0.0)


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo", "gspo", "dr_grpo", "cispo"])
def test_loss_shares_add_up_to_one(loss_type):
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1], [1, 0, 0]])
    parts = [mask[:2], mask[2:4], mask[4:]]
    shares = [DataParallel.loss_share(loss_type, part, mask) for part in parts]
    expected = 3.0 if loss_type in ("dapo", "cispo") else 1.0  # those divide globally already
    assert sum(shares) == pytest.approx(expected)


def test_too_many_learner_processes_is_a_config_error(tmp_path, capsys):
    from test_async import SMOKE

    from rlvr.cli import main

    out = tmp_path / "run"
    # smoke: 4 prompts, 2 minibatches -> 2 groups a minibatch
    code = main(["train", SMOKE, "--out", str(out), "--grpo.num_minibatches", "2",
                 "--learner.processes", "3"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "learner.processes = 3 is larger than the batch allows" in err
    assert "Traceback" not in err and not out.exists()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    from test_async import train

    out = tmp_path_factory.mktemp("dp") / "one"
    assert train(out) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("shard", ["false", "true"], ids=["replicated", "fsdp"])
def test_a_run_with_two_learner_processes(one_process, tmp_path, shard):
    from test_async import numbers, train

    assert train(tmp_path / "two", "--learner.processes", "2", "--learner.fsdp", shard) == 0
    one, two = numbers(one_process), numbers(tmp_path / "two")
    grpo_one = [r for r in one if r["phase"] == "grpo"]
    grpo_two = [r for r in two if r["phase"] == "grpo"]
    assert [r["step"] for r in grpo_two] == [r["step"] for r in grpo_one]
    # The first step samples with the same weights, so its batch and update are the same.
    for key in ("reward", "sampled_tokens", "loss", "kl", "grad_norm"):
        assert grpo_two[0][key] == pytest.approx(grpo_one[0][key], rel=1e-5, abs=1e-6), key
