"""Verifiers: programs that grade a model's response. No torch here: they run in worker pools."""

from rlvr.verifiers.arithmetic import verify_arithmetic
from rlvr.verifiers.base import STATUSES, Verdict, guarded
from rlvr.verifiers.countdown import check_countdown, evaluate_expression, verify_countdown
from rlvr.verifiers.format import ParsedResponse, format_reward, parse_response

__all__ = [
    "STATUSES",
    "ParsedResponse",
    "Verdict",
    "check_countdown",
    "evaluate_expression",
    "format_reward",
    "guarded",
    "parse_response",
    "verify_arithmetic",
    "verify_countdown",
]
