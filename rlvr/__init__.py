"""rlvr: reinforcement learning from verifiable rewards, small enough to read and run on a laptop.

    from rlvr import Config, train, evaluate      # the Python API (rlvr/api.py)

The names load on first use, so `import rlvr.verifiers` in a verifier worker stays cheap
(no torch).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Config", "Run", "train", "evaluate", "__version__"]

if TYPE_CHECKING:
    from rlvr.api import Run, evaluate, train
    from rlvr.config import Config


class _TrainModule(types.ModuleType):
    """rlvr/train.py, callable: `rlvr.train(...)` is `rlvr.api.train(...)`.

    A package's attribute for a submodule is set to that module when the submodule is
    imported, so `from rlvr import train` gives the module rlvr/train.py once anything has
    imported it. Making that module callable lets `train` be both the module (its functions,
    `rlvr.train.run`) and the API function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rlvr.api import train

        return train(*args, **kwargs)


class _Package(types.ModuleType):
    """The rlvr package object: gives rlvr/train.py the `_TrainModule` class as it loads."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and type(value) is types.ModuleType:
            value.__class__ = _TrainModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name == "train":
        return importlib.import_module("rlvr.train")  # callable, see _TrainModule
    if name in ("Run", "evaluate"):
        from rlvr import api

        return getattr(api, name)
    if name == "Config":
        from rlvr.config import Config

        return Config
    raise AttributeError(f"module 'rlvr' has no attribute {name!r}")
