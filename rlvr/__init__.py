"""rlvr: reinforcement learning from verifiable rewards, small enough to read and run on a laptop."""

__version__ = "0.1.0"
