"""rlvr: reinforcement learning from verifiable rewards, small enough to read and run on a laptop.

    from rlvr import Config, train, evaluate      # the Python API (rlvr/api.py)

The names load on first use, so `import rlvr.verifiers` in a verifier worker stays cheap
(no torch). The job itself (pretrain or load, evaluate, GRPO or the phases, evaluate) is
rlvr/loop.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Config", "Run", "train", "evaluate", "__version__"]

if TYPE_CHECKING:
    from rlvr.api import Run, evaluate, train
    from rlvr.config import Config


def __getattr__(name: str) -> Any:
    if name in ("Run", "train", "evaluate"):
        from rlvr import api

        return getattr(api, name)
    if name == "Config":
        from rlvr.config import Config

        return Config
    raise AttributeError(f"module 'rlvr' has no attribute {name!r}")
