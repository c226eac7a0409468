"""VerifierPool: timeouts, crashes, memory, user verifiers, order, shutdown."""

import os
import time

import pytest

from rlvr.verifiers.base import Verdict
from rlvr.verifiers.pool import VerifierPool, as_verdict, in_worker


# Verifiers live at module level: workers import them by name (tests/ is on their path).
def exact_match(completion: str, problem: dict) -> float:
    return float(completion.strip() == problem["answer"])


def sleepy(seconds: float, value: int) -> float:
    time.sleep(seconds)
    return float(value)


def hang(_completion: str, _problem: dict) -> float:
    while True:
        time.sleep(1)


def crash(_completion: str, _problem: dict) -> float:
    os._exit(3)


def explode(_completion: str, _problem: dict) -> float:
    raise ValueError("bad input")


def memory_bomb(_completion: str, _problem: dict) -> float:
    return float(len(bytearray(2**31)))


def report_worker(_completion: str, _problem: dict) -> Verdict:
    return Verdict(0.5, "wrong", {"accuracy": 0.5}, f"in_worker={in_worker()} pid={os.getpid()}")


def pid(_completion: str, _problem: dict) -> float:
    return float(os.getpid())


@pytest.fixture
def pool():
    with VerifierPool(num_workers=2, timeout_s=1.0, memory_mb=512) as p:
        yield p


def test_float_verifier_becomes_a_verdict(pool):
    problem = {"answer": "4"}
    correct, wrong = pool.map(exact_match, [("4", problem), ("5", problem)])
    assert (correct.reward, correct.status) == (1.0, "correct")
    assert (wrong.reward, wrong.status) == (0.0, "wrong")


def test_verdicts_pass_through_and_run_in_a_worker(pool):
    verdict = pool.submit(report_worker, "x", {}).result()
    assert verdict.status == "wrong" and verdict.reward == 0.5
    assert "in_worker=True" in verdict.reason and f"pid={os.getpid()}" not in verdict.reason
    assert not in_worker()


def test_order_is_input_order(pool):
    delays = [0.2, 0.0, 0.1, 0.0, 0.15, 0.05]
    verdicts = pool.map(sleepy, [(d, i) for i, d in enumerate(delays)])
    assert [v.reward for v in verdicts] == [float(i) for i in range(len(delays))]


def test_hanging_verifier_is_killed_and_replaced(pool):
    start = time.perf_counter()
    items = [("a", {}), ("b", {})]
    hung = pool.map(hang, items)
    assert [v.status for v in hung] == ["timeout", "timeout"]
    assert all(v.reward == 0.0 for v in hung)
    assert time.perf_counter() - start < 5.0
    assert pool.num_replaced >= 2
    assert pool.map(exact_match, [("4", {"answer": "4"})])[0].status == "correct"


def test_crashing_worker_is_replaced(pool):
    verdicts = pool.map(crash, [("a", {})] * 3)
    assert all(v.status == "error" and "died" in v.reason for v in verdicts)
    assert pool.map(exact_match, [("4", {"answer": "4"})])[0].status == "correct"


def test_exceptions_and_memory_become_errors(pool):
    raised, bomb = pool.map(explode, [("a", {})])[0], pool.map(memory_bomb, [("a", {})])[0]
    assert raised.status == "error" and "bad input" in raised.reason
    assert bomb.status == "error" and bomb.reward == 0.0


def test_unpicklable_and_odd_results(pool):
    verdict = pool.submit(lambda c, p: 1.0, "a", {}).result()
    assert verdict.status == "error" and "pickle" in verdict.reason
    assert as_verdict(None).status == "error"
    assert as_verdict(float("nan")).status == "error"
    assert as_verdict(True).status == "correct"
    assert as_verdict(0.5).status == "wrong"


def test_close_leaves_no_processes():
    pool = VerifierPool(num_workers=2, timeout_s=1.0)
    pids = {int(v.reward) for v in pool.map(pid, [("a", {}), ("b", {}), ("c", {})])}
    pool.close()
    for worker_pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(worker_pid, 0)
    with pytest.raises(RuntimeError):
        pool.submit(pid, "a", {})
