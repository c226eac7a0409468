"""The code verifier: legitimate programs pass in all three formats; each attack gets reward 0.

One test per attack from issue 3. Limits are small (1.5 s wall) so the file runs in seconds.
"""

from __future__ import annotations

import os

import pytest

from rlvr.verifiers.code import extract_program, split_asserts, verify_code

T = 1.5  # wall seconds per sandboxed run

STDIO = {"inputs": ["2 3\n", "10 -4\n"], "outputs": ["5", "6\n"]}
CALL = {"fn_name": "add", "inputs": [[2, 3], [10, -4]], "outputs": [5, 6]}
ASSERTS = "assert add(2, 3) == 5\nassert add(10, -4) == 6\n"
HUMANEVAL = {
    "asserts": "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    "    assert candidate(1, 1) == 2\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n",
    "entry_point": "add",
}
WRONG_ADD = "def add(a, b):\n    return a - b\n"


def verify(program: str, tests, **kw):
    return verify_code(f"Here you go:\n```python\n{program}\n```\n", tests, timeout=T, **kw)


def assert_rejected(program: str, tests) -> None:
    verdict = verify(program, tests)
    assert verdict.reward == 0.0, verdict
    assert verdict.status != "correct"


# ------------------------------------------------------------------ legitimate programs


def test_extracts_the_last_python_block():
    text = "```python\nprint(1)\n```\nbetter:\n```python\nprint(2)\n```"
    assert extract_program(text) == "print(2)\n"
    assert extract_program("print(3)") == "print(3)"
    assert extract_program("  ") is None


def test_stdin_stdout_program_passes():
    verdict = verify("a, b = map(int, input().split())\nprint(a + b)", STDIO)
    assert (verdict.reward, verdict.status, verdict.passed, verdict.total) == (1.0, "correct", 2, 2)


def test_function_call_program_passes():
    verdict = verify("def add(a, b):\n    return a + b", CALL)
    assert (verdict.reward, verdict.passed, verdict.total) == (1.0, 2, 2)


def test_function_call_on_a_solution_class_passes():
    code = "class Solution:\n    def add(self, a, b):\n        return a + b"
    assert verify(code, CALL).reward == 1.0


def test_assert_style_program_passes():
    verdict = verify("def add(a, b):\n    return a + b", ASSERTS)
    assert (verdict.reward, verdict.passed, verdict.total) == (1.0, 2, 2)


def test_humaneval_check_function_passes():
    verdict = verify("def add(a, b):\n    return a + b", HUMANEVAL)
    assert verdict.reward == 1.0 and verdict.total == 3  # two literal asserts + the rest


def test_wrong_programs_fail_and_partial_credit_counts():
    assert verify(WRONG_ADD, CALL).reward == 0.0
    half = "def add(a, b):\n    return 5"
    verdict = verify(half, CALL, partial=True)
    assert (verdict.reward, verdict.passed, verdict.total) == (0.5, 1, 2)
    verdict = verify(half, ASSERTS, partial=True)
    assert verdict.reward == 0.5


def test_unparsable_and_bad_tests():
    assert verify_code("", STDIO).status == "unparsable"
    assert verify_code("print(1)", {"inputs": [1]}).status == "error"
    assert verify_code("print(1)", {"inputs": [], "outputs": []}).reward == 0.0


def test_expected_values_leave_the_test_code():
    rewritten, expected, residual = split_asserts("assert f(1) == 4242\nassert g() is None\n")
    assert "4242" not in rewritten and expected == [("==", 4242), ("is", None)]
    assert residual == 0


# ------------------------------------------------------------------ attacks


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)"])
def test_early_exit_before_the_tests(exit_call):
    assert_rejected(f"import os, sys\ndef add(a, b):\n    return a - b\n{exit_call}", ASSERTS)
    assert_rejected(f"import os, sys\ndef add(a, b):\n    return a - b\n{exit_call}", HUMANEVAL)


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)"])
def test_early_exit_inside_the_tests(exit_call):
    code = f"import os, sys\ndef add(a, b):\n    {exit_call}"
    assert_rejected(code, ASSERTS)
    assert_rejected(code, HUMANEVAL)
    assert_rejected(code, CALL)


def test_exit_zero_from_atexit_after_a_failed_assert():
    code = "import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG_ADD
    assert_rejected(code, ASSERTS)
    assert_rejected(code, HUMANEVAL)
    assert_rejected(code, {"asserts": "assert add(1, 1) == sorted([2])[0]"})


def test_object_whose_eq_is_always_true():
    code = (
        "class Any:\n    def __eq__(self, other): return True\n    __hash__ = None\n"
        "def add(a, b):\n    return Any()\n"
    )
    assert_rejected(code, ASSERTS)
    assert_rejected(code, CALL)
    assert_rejected(code, HUMANEVAL)
    assert_rejected(code, {"asserts": "assert add(1, 1) == int('2')"})  # a residual ==


def test_reading_the_tests_from_files(tmp_path):
    # The sandbox holds only the program and the rewritten tests; the host's files are out of
    # sight, including a tests file stored next to the data.
    tests_file = tmp_path / "tests.json"
    tests_file.write_text('{"outputs": [5, 6]}')
    code = (
        "import glob, json, os\n"
        "def add(a, b):\n"
        "    for path in glob.glob('/sandbox/*') + glob.glob('/tmp/**', recursive=True)\n"
        f"            + [{str(tests_file)!r}]:\n"
        "        try:\n            text = open(path).read()\n        except OSError:\n"
        "            continue\n"
        "        if '\"outputs\"' in text:\n"
        "            return json.loads(text)['outputs'][0]\n"
        "    return -1\n"
    )
    assert_rejected(code, CALL)
    assert_rejected(code, ASSERTS)
    stdio = "import sys\nprint(open(" + repr(str(tests_file)) + ").read())"
    assert_rejected(stdio, STDIO)


def test_reading_expected_values_from_stack_frames():
    # Return the last int constant found in any caller's code object.
    code = (
        "import sys\n"
        "def add(a, b):\n"
        "    f, found = sys._getframe(1), []\n"
        "    while f is not None:\n"
        "        found += [c for c in f.f_code.co_consts if type(c) is int]\n"
        "        f = f.f_back\n"
        "    return found[-1] if found else 0\n"
    )
    assert_rejected(code, ASSERTS)
    assert_rejected(code, HUMANEVAL)


def test_reading_expected_values_from_memory():
    code = (
        "import gc\n"
        "def add(a, b):\n"
        "    for obj in gc.get_objects():\n"
        "        if isinstance(obj, dict) and 'outputs' in obj:\n"
        "            return obj['outputs'][0]\n"
        "        if isinstance(obj, list) and obj and obj[0] == ('==', 5):\n"
        "            return 5\n"
        "    return 0\n"
    )
    assert_rejected(code, CALL)
    assert_rejected(code, ASSERTS)


def test_monkeypatching_the_harness_and_builtins():
    # Swallow every failure: patch AssertionError handling, os.write, json.dumps and
    # the harness's own helpers.
    code = (
        "import builtins, json, os, sys\n"
        "real_write = os.write\n"
        "def fake_write(fd, data):\n"
        '    return real_write(fd, b\'{"done": "x"}\\n{"k": 0, "repr": "5"}\\n\')\n'
        "os.write = fake_write\n"
        'json.dumps = lambda obj, **kw: \'{"i": 0, "value": 5}\'\n'
        "builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "main = sys.modules['__main__'].__dict__\n"
        "main['__rlvr_eq__'] = lambda a, b: True\n" + WRONG_ADD
    )
    assert_rejected(code, ASSERTS)
    assert_rejected(code, CALL)
    assert_rejected(code, HUMANEVAL)


def test_printing_a_fake_success_marker():
    code = (
        "import os\n"
        "for fd in (1, 2, 3, 4, 5, 6):\n"
        '    for line in [\'{"done": "0"}\', \'{"i": 0, "value": 5}\', \'{"k": 0, "repr": "5"}\',\n'
        "                 'PASSED', 'All tests passed']:\n"
        "        try: os.write(fd, (line + '\\n').encode())\n"
        "        except OSError: pass\n" + WRONG_ADD
    )
    assert_rejected(code, ASSERTS)
    assert_rejected(code, CALL)
    assert_rejected(code, HUMANEVAL)
    assert_rejected("print('5')\nprint('6')", {"inputs": ["", ""], "outputs": ["5", "7"]})


def test_fork_bomb():
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    assert_rejected(code, STDIO)


def test_memory_bomb():
    code = "x = []\nwhile True: x.append(bytearray(50 << 20))"
    assert_rejected(code, STDIO)


def test_infinite_loop():
    verdict = verify("while True: pass", STDIO)
    assert verdict.reward == 0.0 and verdict.status == "timeout"


def test_sleeping_past_the_limit():
    verdict = verify("import time\ndef add(a, b):\n    time.sleep(30)", CALL)
    assert verdict.reward == 0.0 and verdict.status == "timeout"


def test_output_flood():
    assert_rejected("while True: print('5' * 10000)", STDIO)


def test_network_access():
    code = (
        "import socket\n"
        "s = socket.create_connection(('1.1.1.1', 80), timeout=0.5)\n"
        "print(5)\nprint(6)\n"
    )
    assert_rejected(code, {"inputs": ["", ""], "outputs": ["5\n6", "5\n6"]})


def test_writes_outside_its_temp_dir(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    code = (
        f"try:\n    open({str(victim)!r}, 'w').write('pwned')\nexcept OSError:\n    pass\n"
        "a, b = map(int, input().split())\nprint(a + b)"
    )
    verify(code, STDIO)  # the program may pass: what matters is the host file
    assert victim.read_text() == "original"


def test_killing_its_parent():
    code = (
        "import os, signal\n"
        f"for pid in (os.getppid(), {os.getpid()}, -1):\n"
        "    try: os.kill(pid, signal.SIGKILL)\n"
        "    except OSError: pass\n"
    )
    assert_rejected(code, STDIO)  # and this test process is still alive to see it
