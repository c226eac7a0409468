"""How a run ends early, as exceptions the CLI turns into one line and an exit code.

ConfigError: bad input - a config, data file or model folder - exit 2.
TrainingError: the run cannot go on (NaN losses, a checkpoint that cannot be written), exit 1.
StopRequested: SIGINT/SIGTERM stopped the run at a step boundary after a checkpoint, exit 0.
"""


class ConfigError(ValueError):
    """Bad input the user can fix (config, data line, model folder); one sentence that names
    the thing and the fix. Kept free of torch so tasks and verifiers can raise it."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived; the run stopped at a step boundary after a checkpoint.

    args: (where it stopped, e.g. "GRPO step 12", the run folder).
    """


class TrainingError(RuntimeError):
    """The run cannot go on; its message is one sentence that says why and how to resume."""
