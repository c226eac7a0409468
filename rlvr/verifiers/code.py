"""The code verifier: run a completion's program against tests in the sandbox.

The program is the last ```python fenced block of the completion (or the whole completion if
it has none). Three test formats:

- stdin/stdout: `{"inputs": [...], "outputs": [...]}`. One sandboxed run per case; the parent
  compares whitespace-normalised stdout with the expected output.
- function call: `{"fn_name": "f", "inputs": [[args...], ...], "outputs": [...]}`. One run
  calls `f` (or `Solution().f`) on every input and sends each return value as JSON; the
  parent compares it with the expected value.
- assert-style: a string of Python run after the program with its functions in scope
  (HumanEval/MBPP), or `{"asserts": code, "entry_point": "f"}` to also call `check(f)`.

Who decides: the trusted parent, from data the program cannot forge. Expected outputs never
enter the sandbox for the first two formats. For asserts, the parent rewrites each
`assert X == <literal>` (and `assert X is True/False/None`) into "report the value of X":
the literal stays in the parent, which compares. Any other assert (`assert abs(X - 1) < 1e-6`)
runs in the sandbox; it passes only if the harness reaches its end and writes a per-run
secret to the result channel. Exit codes are never read. That last path is weaker: code that
digs the secret out of the harness's memory could forge it, so prefer literal asserts.

Reward is 1.0 iff every test passes, else 0.0; `partial=True` makes it the fraction passed.
Without partial credit the stdin/stdout cases stop at the first failure, so `passed` is then
a lower bound.

    verify_code("```python\\nprint(int(input()) * 2)\\n```", {"inputs": ["2\\n"], "outputs": ["4"]})
"""

from __future__ import annotations

import ast
import json
import math
import re
import secrets
from typing import Any

from rlvr.verifiers.base import Verdict, guarded
from rlvr.verifiers.sandbox import Limits, SandboxResult, run_harness, run_python

MAX_PROGRAM_CHARS = 100_000
MAX_REPORTED_CHARS = 100_000  # one reported value; larger ones count as wrong

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_program(completion: str) -> str | None:
    """The last ```python block of the completion, else the whole completion; None if empty."""
    blocks = _FENCE.findall(completion)
    program = blocks[-1] if blocks else completion
    if not program.strip() or len(program) > MAX_PROGRAM_CHARS:
        return None
    return program


def normalize_output(text: str) -> list[str]:
    """Lines with runs of whitespace collapsed, stripped, trailing blank lines dropped."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return lines


# --------------------------------------------------------------------------- harnesses

# Both harnesses are trusted code: the sandbox runs them first, they run the program.
# Each result line is JSON; the parent treats a missing line as a failed test.
_PRELUDE = r"""
import json as _json, os as _os
_dir = _os.path.dirname(__file__)
_write, _dumps, _fd, _repr = _os.write, _json.dumps, CHANNEL_FD, repr
def _emit(obj):
    _write(_fd, (_dumps(obj) + "\n").encode())
with open(_os.path.join(_dir, "spec.json"), encoding="utf-8") as _f:
    _spec = _json.load(_f)
_g = {"__name__": "solution", "__builtins__": __builtins__}
try:
    exec(compile(_spec["program"], "solution.py", "exec"), _g)
except BaseException as _e:  # SystemExit too: leaving early fails every test
    _emit({"load_error": type(_e).__name__})
    raise SystemExit(1)
"""

_CALL_HARNESS = (
    _PRELUDE
    + r"""
_fn = _g.get(_spec["fn_name"])
if _fn is None and isinstance(_g.get("Solution"), type):
    _fn = getattr(_g["Solution"](), _spec["fn_name"], None)
for _i, _args in enumerate(_spec["inputs"]):
    try:
        _line = _dumps({"i": _i, "value": _fn(*_args)})
    except BaseException as _e:
        _line = _dumps({"i": _i, "error": type(_e).__name__})
    _write(_fd, (_line + "\n").encode())
"""
)

_ASSERT_HARNESS = (
    r"""
_PLAIN = (int, float, complex, str, bytes, bool, type(None))
def _check_plain(v, depth=0):
    # Exact builtin types only: a subclass or an object with a rigged __eq__ is rejected.
    t = type(v)
    if depth > 100:
        raise ValueError("too deep")
    if t in _PLAIN:
        return
    if t in (list, tuple, set, frozenset):
        for x in v:
            _check_plain(x, depth + 1)
        return
    if t is dict:
        for k, x in v.items():
            _check_plain(k, depth + 1)
            _check_plain(x, depth + 1)
        return
    raise TypeError(t.__name__)
def __rlvr_check__(k, thunk):
    try:
        v = thunk()
        _check_plain(v)
        line = _dumps({"k": k, "repr": _repr(v)})
    except BaseException as e:
        line = _dumps({"k": k, "error": type(e).__name__})
    _write(_fd, (line + "\n").encode())
def __rlvr_eq__(a, b):
    _check_plain(a)
    _check_plain(b)
    return a == b
"""
    + _PRELUDE
    + r"""
_g.update(__rlvr_check__=__rlvr_check__, __rlvr_eq__=__rlvr_eq__)
try:
    exec(compile(_spec["tests"], "tests.py", "exec"), _g)
except BaseException as _e:
    _emit({"tests_error": type(_e).__name__})
    raise SystemExit(1)
_emit({"done": SECRET})
"""
)


# --------------------------------------------------------------------------- asserts


def _literal(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


class _AssertSplitter(ast.NodeTransformer):
    """Moves the expected side of `assert X == <literal>` out of the test code.

    `expected[k]` holds the literal of the k-th rewritten assert, which becomes
    `__rlvr_check__(k, lambda: X)`. Other asserts stay; their `==` becomes `__rlvr_eq__`.
    """

    def __init__(self) -> None:
        self.expected: list[tuple[str, Any]] = []  # (operator "==" or "is", literal)
        self.num_residual = 0

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, op, right = test.left, test.ops[0], test.comparators[0]
            if isinstance(op, ast.Eq | ast.Is):
                ok, value = _literal(right)
                expr = left
                if not ok:
                    ok, value = _literal(left)
                    expr = right
                if isinstance(op, ast.Is) and not (ok and value in (True, False, None)):
                    ok = False
                if ok:
                    self.expected.append(("is" if isinstance(op, ast.Is) else "==", value))
                    thunk = ast.Lambda(
                        args=ast.arguments([], [], None, [], [], None, []), body=expr
                    )
                    call = ast.Call(
                        ast.Name("__rlvr_check__", ast.Load()),
                        [ast.Constant(len(self.expected) - 1), thunk],
                        [],
                    )
                    return ast.copy_location(ast.Expr(call), node)
            if isinstance(op, ast.Eq):
                node.test = ast.copy_location(
                    ast.Call(ast.Name("__rlvr_eq__", ast.Load()), [left, right], []), test
                )
        self.num_residual += 1
        return node


def split_asserts(test_code: str) -> tuple[str, list[tuple[str, Any]], int]:
    """(rewritten test code, expected literals by index, number of asserts left in place)."""
    splitter = _AssertSplitter()
    tree = ast.fix_missing_locations(splitter.visit(ast.parse(test_code)))
    return ast.unparse(tree), splitter.expected, splitter.num_residual


def _values_equal(got: Any, want: Any) -> bool:
    """== on plain JSON values: a 1e-9 tolerance on floats, booleans never equal numbers."""
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, float) or isinstance(want, float):
        numbers = isinstance(got, int | float) and isinstance(want, int | float)
        return numbers and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(map(_values_equal, got, want))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_values_equal(got[k], want[k]) for k in got)
    return type(got) is type(want) and got == want


def _channel_json(result: SandboxResult) -> list[dict[str, Any]]:
    out = []
    for line in result.channel:
        if len(line) > MAX_REPORTED_CHARS:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


# --------------------------------------------------------------------------- runners


def _run_stdio(
    program: str, inputs: list[str], outputs: list[str], limits: Limits, stop_early: bool, kind: str
) -> tuple[int, bool, str]:
    passed, timed_out, reason = 0, False, ""
    for i, (stdin, want) in enumerate(zip(inputs, outputs)):
        result = run_python(program, str(stdin), limits=limits, kind=kind)
        # A clean exit is required too (a crash after the right output is a runtime error),
        # but never sufficient: the parent compares the output itself.
        ok = (
            result.exit_code == 0
            and not result.killed_reason
            and normalize_output(result.stdout) == normalize_output(str(want))
        )
        passed += ok
        if not ok:
            timed_out = timed_out or result.timed_out
            reason = reason or _failure(i, result)
            if stop_early:
                break
    return passed, timed_out, reason


def _failure(i: int, result: SandboxResult) -> str:
    if result.killed_reason:
        return f"test {i}: killed ({result.killed_reason})"
    tail = result.stderr.strip().splitlines()[-1:] or ["wrong output"]
    return f"test {i}: {tail[0][:120]}"


def _run_calls(
    program: str, fn_name: str, inputs: list[Any], outputs: list[Any], limits: Limits, kind: str
) -> tuple[int, bool, str]:
    spec = {"program": program, "fn_name": fn_name, "inputs": inputs}
    result = run_harness(_CALL_HARNESS, {"spec.json": json.dumps(spec)}, limits=limits, kind=kind)
    got: dict[int, list[Any]] = {}
    reason = ""
    for obj in _channel_json(result):
        if "load_error" in obj:
            reason = f"program raised {obj['load_error']} when loaded"
        i = obj.get("i")
        if isinstance(i, int):
            got.setdefault(i, []).append(obj)
    passed = 0
    for i, want in enumerate(outputs):
        reports = got.get(i, [])
        # Exactly one report, with a value equal to the expected one.
        ok = (
            len(reports) == 1 and "value" in reports[0] and _values_equal(reports[0]["value"], want)
        )
        passed += ok
        if not ok and not reason:
            error = reports[0].get("error") if len(reports) == 1 else None
            reason = f"test {i}: " + (f"raised {error}" if error else "wrong or missing value")
    if result.killed_reason and passed < len(outputs):
        reason = f"killed ({result.killed_reason}); {reason}"
    return passed, result.timed_out, reason


def _run_asserts(
    program: str, test_code: str, entry_point: str | None, limits: Limits, kind: str
) -> tuple[int, int, bool, str]:
    if entry_point:
        test_code += f"\ncheck({entry_point})\n"
    rewritten, expected, num_residual = split_asserts(test_code)
    secret = secrets.token_hex(16)
    spec = {"program": program, "tests": rewritten}
    result = run_harness(
        _ASSERT_HARNESS, {"spec.json": json.dumps(spec)}, secret=secret, limits=limits, kind=kind
    )
    reports: dict[int, list[dict[str, Any]]] = {}
    done = False
    reason = ""
    for obj in _channel_json(result):
        if obj.get("done") == secret:
            done = True
        for key in ("load_error", "tests_error"):
            if key in obj:
                reason = reason or f"{key.split('_')[0]} raised {obj[key]}"
        k = obj.get("k")
        if isinstance(k, int):
            reports.setdefault(k, []).append(obj)
    passed = 0
    for k, (op, want) in enumerate(expected):
        # Every evaluation of the assert (it may sit in a loop) must match, and one must exist.
        got = reports.get(k, [])
        ok = bool(got) and all(_report_matches(r, op, want) for r in got)
        passed += ok
        if not ok and not reason:
            reason = f"assert {k}: " + ("not reached" if not got else "failed")
    # The asserts left in place count as one test: the harness must reach its end.
    total = len(expected) + (1 if num_residual or not expected else 0)
    if total > len(expected):
        passed += done
        if not done and not reason:
            reason = "the tests did not run to completion"
    if result.killed_reason and passed < total:
        reason = f"killed ({result.killed_reason}); {reason}"
    return passed, total, result.timed_out, reason


def _report_matches(report: dict[str, Any], op: str, want: Any) -> bool:
    text = report.get("repr")
    if not isinstance(text, str):
        return False
    ok, got = _literal_from_text(text)
    if not ok:
        return False
    if op == "is":
        return got is want
    try:
        return bool(got == want)
    except Exception:  # noqa: BLE001 - comparing odd literals must not crash the verifier
        return False


def _literal_from_text(text: str) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


# --------------------------------------------------------------------------- verifier


@guarded
def verify_code(
    completion: str,
    tests: dict[str, Any] | str,
    *,
    partial: bool = False,
    timeout: float = 2.0,
    memory_mb: int = 512,
    kind: str = "auto",
) -> Verdict:
    """Grade a completion's program against `tests` (see the module docstring for formats).

    timeout: wall-clock seconds per sandboxed run (per case for stdin/stdout, else per run).
    partial: reward = fraction of tests passed instead of all-or-nothing.
    Returns a Verdict with `passed`/`total` and components {"accuracy", "pass_rate"}.
    """
    limits = Limits(timeout=timeout, memory_mb=memory_mb)
    program = extract_program(completion)
    if program is None:
        return Verdict(0.0, "unparsable", {"accuracy": 0.0, "pass_rate": 0.0}, "no program")
    if isinstance(tests, str):
        tests = {"asserts": tests}
    if not isinstance(tests, dict):
        return _bad_tests("tests must be an object or a string of assert code")

    if "asserts" in tests:
        if not isinstance(tests["asserts"], str):
            return _bad_tests("'asserts' must be a string of Python")
        try:
            passed, total, timed_out, reason = _run_asserts(
                program, tests["asserts"], tests.get("entry_point"), limits, kind
            )
        except SyntaxError as exc:
            return _bad_tests(f"the assert code does not parse: {exc}")
    else:
        inputs, outputs = tests.get("inputs"), tests.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            return _bad_tests("expected 'inputs' and 'outputs' lists, or 'asserts'")
        if len(inputs) != len(outputs) or not inputs:
            return _bad_tests(f"{len(inputs)} inputs for {len(outputs)} outputs")
        total = len(inputs)
        fn_name = tests.get("fn_name")
        if fn_name:
            if not isinstance(fn_name, str) or not all(isinstance(a, list) for a in inputs):
                return _bad_tests("function-call tests need a name and a list of args per case")
            passed, timed_out, reason = _run_calls(program, fn_name, inputs, outputs, limits, kind)
        else:
            passed, timed_out, reason = _run_stdio(
                program, inputs, outputs, limits, not partial, kind
            )

    rate = passed / total
    all_passed = passed == total
    reward = rate if partial else float(all_passed)
    status = "correct" if all_passed else ("timeout" if timed_out else "wrong")
    reason = f"{passed}/{total} tests passed" + (f"; {reason}" if reason else "")
    components = {"accuracy": reward, "pass_rate": rate}
    return Verdict(reward, status, components, reason[:300], passed=passed, total=total)


def _bad_tests(why: str) -> Verdict:
    return Verdict(0.0, "error", {"accuracy": 0.0, "pass_rate": 0.0}, f"bad tests: {why}")
