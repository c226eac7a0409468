"""Where the model runs and in what precision: `device` and `dtype` of the config.

device = place_model(model, cfg.device)     # "auto" | "cpu" | "cuda" | "cuda:N"
with autocast(cfg, model):                   # bf16 forwards when cfg.dtype = "bfloat16"
    logits = model(ids)
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from rlvr.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """cfg.device as a torch.device: "auto" is the first CUDA GPU when torch sees one, else
    the CPU. A GPU that is not there is a ConfigError before any work starts."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device = {name!r}, but this torch ({torch.__version__}) sees no CUDA GPU; "
                'install a CUDA build of torch (docs/gpu.md) or set device = "cpu".'
            )
        if (device.index or 0) >= count:
            raise ConfigError(
                f"device = {name!r}, but torch sees {count} CUDA GPU(s) (cuda:0 to "
                f"cuda:{count - 1}); pick one of those."
            )
    return device


def place_model(model: torch.nn.Module, name: str) -> torch.device:
    """Move `model` to cfg.device `name` (`resolve_device`) and return that device; a GPU
    also becomes the current one (CUDA streams and graphs use the current GPU)."""
    device = resolve_device(name)
    model.to(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def autocast(cfg, model: torch.nn.Module) -> AbstractContextManager:
    """The precision of forward passes: with cfg.dtype = "bfloat16", torch.autocast to bf16
    on the model's device (matmuls in bf16; the float32 master weights, optimizer state and
    the float32 logits the model returns are untouched); with "float32", nothing."""
    if cfg.dtype == "float32":
        return nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)
