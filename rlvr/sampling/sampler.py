"""The sampler role: a GRPO step's problems in, verified and scored episodes out.

A sampler holds a policy at some version, draws the step's problems from the seeded
`ProblemStream`, samples `grpo.group_size` completions of each (`rollout`: the engine decodes,
the verifier pool grades each completion as it finishes), and returns them as `Rollouts`,
every episode stamped with the policy version that sampled it. With DAPO's dynamic sampling
it drops the groups whose rewards are all equal and samples more problems until the batch
is full (at most `grpo.max_sampling_rounds` rounds).

`Sampler` runs in the training process on the learner's own model object (the synchronous
loop: the policy that samples step n is the one step n - 1 left). With `sampler.backend =
"vllm"` it decodes through vLLM (rlvr/sampling/vllm_engine.py) instead of rlvr's `Engine`:
the same rollout, with the learner's weights loaded into vLLM after each step. `SamplerProcess`
(rlvr/sampling/process.py) runs the same code in a process of its own, a fixed number of
versions behind the learner.

    sampler = Sampler(policy, tokenizer, scorer, task, cfg)
    rollouts = sampler.rollouts(step=1)           # sampled by the policy as it is now
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlvr.config import Config
from rlvr.device import autocast
from rlvr.errors import ConfigError
from rlvr.sampling.engine import Engine
from rlvr.sampling.rollout import Episode, rollout, rollout_rounds
from rlvr.sampling.speculative import Speculation
from rlvr.tasks import Problem
from rlvr.tokenizer import CharTokenizer
from rlvr.verifiers.rewards import Scorer


@dataclass
class Rollouts:
    """What one GRPO step sampled: the episodes the learner trains on, and their cost."""

    step: int
    """The GRPO step these episodes are for."""
    policy_version: int
    """The policy version that sampled them (the learner's step count when it did)."""
    sampled: list[Episode]
    """Every episode sampled for the step, in sampling order (the step's reward metrics)."""
    kept: list[int]
    """Indices into `sampled` of the episodes the learner trains on (dynamic sampling drops
    groups whose rewards are all equal)."""
    rounds: int
    """Sampling rounds (1 unless dynamic sampling asked for more)."""
    dropped_groups: int
    """Groups dropped by dynamic sampling."""
    start: float
    """When sampling started and ended, `time.monotonic()` seconds (the same clock in every
    process of the machine: the run's timeline)."""
    end: float
    waited: float = 0.0
    """Seconds the sampler waited for this step's weights before it could start."""
    timings: dict = field(default_factory=dict)
    """Verification against decoding (`rollout`'s timings, summed over the rounds)."""

    @property
    def episodes(self) -> list[Episode]:
        """The episodes the learner trains on (whole groups, group-major)."""
        return [self.sampled[i] for i in self.kept]

    @property
    def seconds(self) -> float:
        """Wall time of the sampling (decoding and verification), seconds."""
        return self.end - self.start

    def to_dict(self) -> dict:
        """Plain data, for a checkpoint that holds rollouts sampled ahead of the learner."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["sampled"] = [ep.to_dict() for ep in self.sampled]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Rollouts:
        data = dict(data)
        data["sampled"] = [Episode.from_dict(ep) for ep in data["sampled"]]
        return cls(**data)


def informative_groups(episodes: list[Episode], group_size: int) -> list[int]:
    """Indices of the episodes in groups whose rewards are not all equal (DAPO dynamic
    sampling keeps only these)."""
    kept = []
    for i in range(0, len(episodes), group_size):
        if len({ep.reward for ep in episodes[i : i + group_size]}) > 1:
            kept += range(i, i + group_size)
    return kept


class ProblemStream:
    """The seeded, endless stream of GRPO training batches, addressable by batch index.

    Batch i is the same for the same seed however the run got there, so a resumed run picks
    up at the index its checkpoint saved.
    """

    def __init__(self, task, cfg: Config) -> None:
        self.task, self.seed, self.size = task, cfg.seed, cfg.grpo.num_prompts
        # Each round is a fresh seeded draw of up to 50 batches (a dataset: all of it, shuffled).
        available = task.num_problems("train") if hasattr(task, "num_problems") else 1 << 62
        self.batches_per_round = min(50, available // self.size)
        if self.batches_per_round == 0:
            raise ConfigError(
                f"The task has {available} training problems, fewer than grpo.num_prompts = "
                f"{self.size}; lower grpo.num_prompts or add problems."
            )
        self._round, self._pool = -1, []

    def batch(self, index: int) -> list[Problem]:
        round_, offset = divmod(index, self.batches_per_round)
        if round_ != self._round:
            self._pool = self.task.problems(
                "train", self.size * self.batches_per_round, seed=self.seed * 7919 + 17 + round_
            )
            self._round = round_
        return self._pool[offset * self.size : (offset + 1) * self.size]


def make_engine(model: torch.nn.Module, tokenizer, cfg: Config) -> Engine:
    """The sampling engine `cfg.sampler` asks for on `model`: speculative decoding
    (sampler.speculate), continuous batching. The engine keeps what speculation learns
    (acceptance, completions of problems that come back) across its calls."""
    from rlvr.model import Transformer

    s = cfg.sampler
    needs_rlvr = s.speculate != "off" or s.exact_logprobs
    if needs_rlvr and not isinstance(model, Transformer):
        raise ConfigError(
            f"sampler.speculate and sampler.exact_logprobs need rlvr's model class (Llama, "
            f"Qwen2, Qwen3 and Mistral checkpoints load into it), not {type(model).__name__}; "
            'set sampler.speculate = "off" and sampler.exact_logprobs = false for this model.'
        )
    speculation = None
    if s.speculate == "context":
        speculation = Speculation(s.speculate_tokens)
    elif s.speculate == "draft":
        draft = load_draft_model(s.draft_model, tokenizer)
        draft.to(next(model.parameters()).device)
        speculation = Speculation(s.speculate_tokens, draft_model=draft)
    return Engine(model, pad_id=tokenizer.pad_id, speculation=speculation,
                  continuous_batching=s.continuous_batching)  # fmt: skip


def load_draft_model(path: str, tokenizer) -> torch.nn.Module:
    """The draft model at `path` (an rlvr run or checkpoint folder, or a Hugging Face
    checkpoint folder), in eval mode; it must be rlvr's model class with `tokenizer`'s
    vocabulary, else a ConfigError."""
    from pathlib import Path

    from rlvr.checkpoint import load_checkpoint
    from rlvr.hf import load_hf_model
    from rlvr.model import Transformer

    where, folder = f"sampler.draft_model {path}", Path(path)
    try:
        if (folder / "config.json").is_file() and not (folder / "rlvr_config.toml").is_file():
            draft, draft_tokenizer = load_hf_model(folder)
        else:  # an rlvr run or checkpoint folder
            draft, draft_tokenizer, _, _ = load_checkpoint(folder)
    except (ValueError, OSError, ImportError, ConfigError) as e:
        raise ConfigError(f"{where}: {e}".rstrip(".") + ".") from e
    if not isinstance(draft, Transformer):
        raise ConfigError(f"{where} is a {type(draft).__name__}; a draft model must load "
                          "into rlvr's model class (a Llama, Qwen2, Qwen3 or Mistral model).")  # fmt: skip
    vocab = tokenizer.vocab_size
    same = draft_tokenizer.vocab_size == vocab and all(
        draft_tokenizer.decode([i]) == tokenizer.decode([i]) for i in range(vocab)
    )
    if not same:
        raise ConfigError(f"{where} has another tokenizer than the policy's; a draft model "
                          "must use the same one.")  # fmt: skip
    return draft.eval().requires_grad_(False)


class Sampler:
    """The sampler role in this process, on the model object it is given.

    The synchronous loop gives it the learner's own policy, so weights need no hand-over:
    step n samples with the policy that step n - 1 left (policy version n - 1).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: CharTokenizer, scorer: Scorer,
                 task, cfg: Config) -> None:  # fmt: skip
        self.model, self.tokenizer, self.scorer, self.cfg = model, tokenizer, scorer, cfg
        self.vllm = None
        """The VLLMEngine with sampler.backend = "vllm" (then also `engine`), else None."""
        if cfg.sampler.backend == "vllm":
            from rlvr.sampling.vllm_engine import VLLMEngine

            folder = cfg.model_path if cfg.model_path and Path(cfg.model_path).is_dir() else ""
            self.vllm = VLLMEngine(model, tokenizer, cfg, model_path=folder)
        self.engine = self.vllm or make_engine(model, tokenizer, cfg)
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        self.problems = ProblemStream(task, cfg)
        self.batches_drawn = 0
        """How many problem batches have been taken from the stream."""
        self.pending: dict[int, Rollouts] = {}
        """Rollouts an asynchronous run sampled ahead and its checkpoint stored, by step."""

    def rollouts(self, step: int) -> Rollouts:
        """Step `step`'s episodes: sampled with the model as it is now (version step - 1), or
        taken from what a checkpoint of an asynchronous run stored for that step."""
        if step in self.pending:
            return self.pending.pop(step)
        return self.sample(step, policy_version=step - 1)

    def sample(self, step: int, policy_version: int) -> Rollouts:
        """k completions per problem of the next batch, verified as each finishes; with
        dynamic sampling, more batches until enough groups have unequal rewards."""
        g, start = self.cfg.grpo, time.monotonic()
        self.model.eval()
        if self.vllm is not None and self.vllm.version != policy_version:
            self.vllm.load_weights(self.model, policy_version)  # (a sampler process's weights)
        # vLLM runs in its own precision (dtype), not under this process's autocast
        precision = autocast(self.cfg, self.model) if self.vllm is None else nullcontext()
        target = g.num_prompts * g.group_size
        if g.dynamic_sampling and self.engine.continuous_batching and self.engine.streams:
            return self._sample_rounds(step, policy_version)
        sampled: list[Episode] = []
        kept: list[int] = []
        rounds = flat_groups = 0
        timings: dict = {}
        while rounds == 0 or (
            g.dynamic_sampling and len(kept) < target and rounds < g.max_sampling_rounds
        ):
            with precision:
                new = rollout(
                    self.engine, self.tokenizer, self.scorer,
                    self.problems.batch(self.batches_drawn),
                    num_samples=g.group_size, max_new_tokens=g.max_new_tokens,
                    temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                    generator=self.generator, policy_version=policy_version,
                    ignore_eos=g.ignore_eos, min_new_tokens=g.min_new_tokens, timings=timings,
                )  # fmt: skip
            self.batches_drawn, rounds = self.batches_drawn + 1, rounds + 1
            keep = informative_groups(new, g.group_size) if g.dynamic_sampling else range(len(new))
            flat_groups += (len(new) - len(keep)) // g.group_size
            kept += [len(sampled) + i for i in keep]
            sampled += new
        return Rollouts(step, policy_version, sampled, kept[:target], rounds, flat_groups,
                        start, time.monotonic(), timings=timings)  # fmt: skip

    def _sample_rounds(self, step: int, policy_version: int) -> Rollouts:
        """Dynamic sampling with continuous batching: the next round's problems take the
        rows of the last round's finished samples (`rollout_rounds`), and sampling stops at
        the first round after which enough groups have unequal rewards."""
        g, start = self.cfg.grpo, time.monotonic()
        target = g.num_prompts * g.group_size
        rounds = 0

        def next_batch() -> list[Problem] | None:
            nonlocal rounds
            if rounds == g.max_sampling_rounds:
                return None
            rounds += 1
            self.batches_drawn += 1
            return self.problems.batch(self.batches_drawn - 1)

        sampled: list[Episode] = []
        kept: list[int] = []
        flat_groups, used, timings = 0, 0, {}
        with autocast(self.cfg, self.model):
            for new in rollout_rounds(
                self.engine, self.tokenizer, self.scorer, next_batch,
                num_samples=g.group_size, max_new_tokens=g.max_new_tokens,
                temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                generator=self.generator, policy_version=policy_version,
                ignore_eos=g.ignore_eos, min_new_tokens=g.min_new_tokens, timings=timings,
                max_rows=target,
            ):  # fmt: skip
                used += 1
                keep = informative_groups(new, g.group_size)
                flat_groups += (len(new) - len(keep)) // g.group_size
                kept += [len(sampled) + i for i in keep]
                sampled += new
                if len(kept) >= target:
                    break
        return Rollouts(step, policy_version, sampled, kept[:target], used, flat_groups,
                        start, time.monotonic(), timings=timings)  # fmt: skip

    def publish(self, model: torch.nn.Module, version: int) -> None:
        """The learner's weights after step `version`: nothing to hand over to rlvr's engine
        (the sampler's model is the learner's own); vLLM loads them in place."""
        if self.vllm is not None:
            self.vllm.load_weights(model, version)

    def state_dict(self) -> dict:
        """What a checkpoint needs to continue the same stream of samples."""
        state = {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}
        if self.engine.speculation is not None:  # (its decisions shape the forwards)
            state["speculation"] = self.engine.speculation.state_dict()
        if self.pending:  # (resumed from an asynchronous run and not yet trained on)
            state["pending_rollouts"] = [self.pending[s].to_dict() for s in sorted(self.pending)]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = state["batches_drawn"]
        if self.engine.speculation is not None and state.get("speculation"):
            self.engine.speculation.load_state_dict(state["speculation"])
        for data in state.get("pending_rollouts") or []:
            rollouts = Rollouts.from_dict(data)
            self.pending[rollouts.step] = rollouts

    def close(self) -> None:
        """Release vLLM, if this sampler started it."""
        if self.vllm is not None:
            self.vllm.close()
