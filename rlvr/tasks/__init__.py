"""Tasks: problem sources that own their generator, grader and synthetic reasoning traces.

No torch here: problems and tasks pickle cheaply into worker processes.
"""

from rlvr.tasks.arithmetic import ArithmeticTask
from rlvr.tasks.base import SPLITS, Problem, Task
from rlvr.tasks.countdown import CountdownTask
from rlvr.tasks.dataset import DatasetTask

TASKS = {"arithmetic": ArithmeticTask, "countdown": CountdownTask, "dataset": DatasetTask}

__all__ = [
    "SPLITS",
    "TASKS",
    "ArithmeticTask",
    "CountdownTask",
    "DatasetTask",
    "Problem",
    "Task",
]
