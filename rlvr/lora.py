"""LoRA through peft: adapters injected into the policy for GRPO, merged into the weights at the end.

    inject_lora(policy, cfg.lora)         # policy's q/k/v/o/gate/up/down gain LoRA adapters;
                                          # only the adapters have requires_grad
    with adapters_disabled(policy):       # the reference policy: the base weights alone
        ref_logits = policy(ids)
    with base_layers(policy):             # the plain model (base weights, Hugging Face names)
        save_checkpoint(path, policy, ...)
    merged = merged_copy(policy)          # a plain model with W + (alpha / r) B A in each layer

Our Transformer is a plain nn.Module with Hugging Face parameter names, so
`peft.inject_adapter_in_model` wraps its nn.Linear layers in place (no PeftModel). The base
weights never change while LoRA trains, which is why a resumable checkpoint stores them as
its model.safetensors and the adapters (and their optimizer state) in trainer_state.pt: a
resumed run re-injects the adapters and loads them back, bitwise. A model without adapters
passes through every function here unchanged, and peft is imported only when LoRA is on.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from rlvr.config import LoraConfig
from rlvr.errors import ConfigError

ADAPTER_KEY = "lora_"  # in the names of adapter parameters: ...q_proj.lora_A.default.weight


def _peft():
    try:
        import peft
    except ImportError as e:
        raise ConfigError(
            "lora.rank > 0 needs the peft package; install it with `pip install peft` "
            "(or `pip install -e '.[hf]'` in a checkout), or set lora.rank = 0."
        ) from e
    return peft


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every LoRA-wrapped layer; none when peft was never imported."""
    if "peft" not in sys.modules:
        return []
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def check_targets(model: nn.Module, cfg: LoraConfig) -> None:
    """ConfigError unless every lora.target_modules name is one of the model's linear layers."""
    if cfg.rank == 0:
        return
    names = {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"lora.target_modules {missing} name no linear layer of the model; its linear "
            f"layers are {', '.join(sorted(names))}."
        )


def inject_lora(model: nn.Module, cfg: LoraConfig) -> int:
    """Wrap the target layers of `model` in LoRA adapters (in place) and freeze everything
    else. Returns the number of trainable parameters. The adapters start as B = 0, so the
    model computes exactly what it did before."""
    peft = _peft()
    config = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
    )
    try:
        peft.inject_adapter_in_model(config, model)
    except ValueError as e:  # no module matches a target name
        raise ConfigError(f"lora.target_modules: {e}".rstrip(".") + ".") from e
    for name, p in model.named_parameters():
        p.requires_grad_(ADAPTER_KEY in name)
    # Gradients left on the now frozen weights (pretraining's last step) would otherwise
    # count in every later gradient norm and its clipping: the optimizer never clears them.
    model.zero_grad(set_to_none=True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: every LoRA layer computes its base layer alone (the reference policy)."""
    layers = [m for _, m in lora_layers(model)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)  # also turns the adapters' requires_grad back on


@contextmanager
def base_layers(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: the LoRA layers are swapped out for their base layers, so `model` is the plain
    model again (state_dict under the usual names, without adapters)."""
    swapped = []
    for name, module in lora_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, module.get_base_layer())
        swapped.append((parent, child, module))
    try:
        yield model
    finally:
        for parent, child, module in swapped:
            setattr(parent, child, module)


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain copy of `model` with each adapter merged into its base weight
    (W + alpha / rank * B A); `model` itself keeps its adapters. Without adapters: `model`."""
    if not lora_layers(model):
        return model
    merged = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in lora_layers(merged):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent_name), child, module.get_base_layer())
    return merged.requires_grad_(False)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights, by parameter name (empty without adapters)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if ADAPTER_KEY in k}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor] | None) -> None:
    """Put saved adapter weights back into a model whose adapters were injected alike."""
    expected = set(adapter_state(model))
    if expected != set(state or {}):
        raise ConfigError(
            "The checkpoint's LoRA adapters do not match lora.rank / lora.target_modules of "
            "this run; resume with the settings the run was started with."
        )
    model.load_state_dict(state, strict=False)  # the base weights are the model's own
