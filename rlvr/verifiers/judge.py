"""The judge: a local language model that says whether a response's answer matches the gold.

Some answers cannot be checked by rules (free-form text, proof sketches, answers the math
grader cannot parse). With `reward.judge.model = "path/to/hf_folder"` the Scorer asks the judge
where the rules cannot decide (`reward.judge.when = "unparsable"`, the default) or for every
response (`"always"`). Offline: `rlvr verify answers.jsonl --verifier judge --judge-model PATH`.

    judge = Judge(cfg.reward.judge)                     # starts the worker, loads the model
    future = judge.submit("2+2=", "4", reference="4")   # returns at once
    future.result()                                     # Verdict(1.0, "correct", ...)

The model runs in one worker process of its own (a fresh interpreter: this module never imports
torch), loaded once through rlvr.hf and decoded greedily by rlvr's Engine. Responses that wait
while the worker is busy go to it together, up to `batch_size` per call. The prompt is
`template` filled with {question}, {response} (the response's answer, `response_answer`) and
{reference}, put through the judge's chat template when it has one; its output is correct when
`correct_pattern` matches, wrong when `wrong_pattern` does, else status "unparsable".

A call that runs past `timeout_s` kills the worker (status "timeout"); one whose worker dies or
raises is status "error". The call is retried once, on a new worker where the old one is gone
(loading the model is not timed); a second failure scores its responses 0 with that status.
An unparsable output is not retried: greedy decoding would say the same again.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from pathlib import Path

from rlvr.errors import ConfigError
from rlvr.verifiers.base import Verdict
from rlvr.verifiers.format import answer_part, parse_response
from rlvr.verifiers.pool import _recv, _send, kill_worker, protocol_streams, spawn_worker

LOAD_TIMEOUT_S = 600.0  # a worker that has not loaded its model by then is given up on
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def check_judge_folder(path: str) -> None:
    """Raise ConfigError unless `path` looks like a Hugging Face model folder: config.json
    with a model_type, weights (*.safetensors or pytorch_model*.bin) and a tokenizer."""
    folder = Path(path)
    fix = "set reward.judge.model (or --judge-model) to a folder written by save_pretrained"
    if not folder.is_dir():
        raise ConfigError(f"The judge model {path} is not a folder; {fix}.")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"The judge model {path} has no readable config.json ({e}); {fix}."
        ) from e
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ConfigError(f"The judge model {path}: config.json names no model_type; {fix}.")
    weights = [*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]
    if not weights:
        raise ConfigError(f"The judge model {path} holds no weights (*.safetensors); {fix}.")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"The judge model {path} holds no tokenizer (tokenizer.json or "
            "tokenizer_config.json); copy the tokenizer files of the original model into it."
        )


def response_answer(response: str) -> str:
    """What the judge reads of a response: its single <answer> block, else the text after
    its think block, with the format's tags left out."""
    from rlvr.tokenizer import SPECIAL_TOKENS

    tail = answer_part(response)
    parsed = parse_response(tail)
    text = parsed.answer if parsed.answer is not None else tail
    for tag in SPECIAL_TOKENS:
        text = text.replace(tag, " ")
    return text.strip()


def parse_judgment(output: str, correct_pattern: str, wrong_pattern: str) -> Verdict:
    """The Verdict of a judge's output text: correct_pattern first, then wrong_pattern,
    both searched case-insensitively; neither is status "unparsable"."""
    shown = output.strip()[:80]
    if re.search(correct_pattern, output, re.IGNORECASE):
        return Verdict(1.0, "correct", {"accuracy": 1.0}, f"judge: {shown!r}")
    if re.search(wrong_pattern, output, re.IGNORECASE):
        return Verdict(0.0, "wrong", {"accuracy": 0.0}, f"judge: {shown!r}")
    return Verdict(0.0, "unparsable", {"accuracy": 0.0}, f"judge said neither: {shown!r}")


# --- the worker process ------------------------------------------------------------------------


def _worker_main() -> None:
    """Entry point of the judge's worker: load the model, then answer batches of prompts
    (lists of question texts) with lists of output texts until stdin closes."""
    _die_with_parent()
    settings = json.loads(sys.argv[1])
    inbox, outbox = protocol_streams()
    try:
        import torch

        from rlvr.hf import load_hf_model
        from rlvr.sampling.engine import Engine

        torch.set_num_threads(settings["threads"])
        model, tokenizer = load_hf_model(settings["model"])
        engine = Engine(model, pad_id=tokenizer.pad_id)
        limit = model.config.max_position_embeddings
    except Exception as e:  # noqa: BLE001 - reported to the parent as one sentence
        _send(outbox, ("failed", f"{type(e).__name__}: {e}"[:500]))
        return
    _send(outbox, ("ready", limit))
    max_new = settings["max_new_tokens"]
    while True:
        try:
            texts = _recv(inbox)
        except EOFError:
            return
        try:
            prompts = [tokenizer.encode(tokenizer.format_prompt(t)) for t in texts]
            # keep each prompt's end (the response and the question) when it is too long
            prompts = [p[-(limit - max_new) :] if len(p) > limit - max_new else p for p in prompts]
            with torch.inference_mode():
                completions = engine.generate(
                    prompts, num_samples=1, max_new_tokens=max_new, temperature=0.0,
                    stop_token_ids=tokenizer.stop_ids,
                )  # fmt: skip
            outputs = [tokenizer.decode(c.token_ids, skip_special=True) for c in completions]
        except Exception as e:  # noqa: BLE001 - one bad batch must not end the worker
            _send(outbox, ("raised", f"{type(e).__name__}: {e}"[:300]))
            continue
        _send(outbox, ("ok", outputs))


_WORKER_CODE = "from rlvr.verifiers.judge import _worker_main; _worker_main()"


class _Worker:
    """The judge's worker process; `start` returns once it has loaded the model."""

    def __init__(self, settings: dict) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = spawn_worker(_WORKER_CODE, json.dumps(settings), env)
        self.context = 0  # the model's context length, tokens (known once it is loaded)

    def wait_ready(self, timeout_s: float) -> str | None:
        """None once the model is loaded, else why the worker could not load it."""
        message = self.receive(timeout_s)
        if message is None:
            return f"it did not load the model within {timeout_s:g} s"
        kind, payload = message
        if kind == "ready":
            self.context = payload
            return None
        return str(payload or "the worker exited while loading")

    def receive(self, timeout_s: float):
        """The next message, ("died", reason) if the worker is gone, None on timeout."""
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not readable:
            return None
        try:
            return _recv(self.proc.stdout)
        except (EOFError, OSError):
            code = self.proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            return ("died", f"the judge's worker died ({how})")

    def kill(self) -> None:
        kill_worker(self.proc)


def _die_with_parent() -> None:
    """In the worker: be killed when the parent dies (Linux), so no judge outlives its run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _kill(worker_box: list) -> None:
    if worker_box and worker_box[0] is not None:
        worker_box[0].kill()


class Judge:
    """The judge model in its worker process, fed in batches by a dispatcher thread.

    settings: a JudgeConfig (model, template, correct_pattern, wrong_pattern, max_new_tokens,
    batch_size, timeout_s, threads). Starting it loads the model; a folder that is not a
    model, or one the worker cannot load, raises ConfigError.
    """

    def __init__(self, settings) -> None:
        check_judge_folder(settings.model)
        self.settings = settings
        self.calls = 0
        """Judge calls (batches) made, retries included."""
        self.judged = 0
        """Responses graded by the judge."""
        self.restarts = 0
        """Workers killed (timeout) or found dead; the next call starts a new one."""
        self._spawn = {"model": str(settings.model), "threads": settings.threads,
                       "max_new_tokens": settings.max_new_tokens}  # fmt: skip
        self._box: list[_Worker | None] = [None]  # the worker (a list, for the finalizer)
        self._start_worker(first=True)
        self._lock = threading.Condition()
        self._queue: deque[tuple[str, Future]] = deque()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill, self._box)
        self._thread = threading.Thread(target=self._dispatch, name="judge", daemon=True)
        self._thread.start()

    def _start_worker(self, first: bool = False) -> str | None:
        """Start a worker and wait for its model; returns why it failed (None: ready)."""
        worker = _Worker(self._spawn)
        reason = worker.wait_ready(LOAD_TIMEOUT_S)
        if reason is not None:
            worker.kill()
            if first:
                raise ConfigError(
                    f"The judge model {self.settings.model} could not be loaded ({reason}); "
                    "point reward.judge.model at a Hugging Face causal LM folder."
                )
            return reason
        if first and worker.context <= self.settings.max_new_tokens:
            worker.kill()
            raise ConfigError(
                f"reward.judge.max_new_tokens ({self.settings.max_new_tokens}) leaves no room "
                f"for the prompt in the judge model's {worker.context}-token context; lower it."
            )
        self._box[0] = worker
        return None

    @property
    def pid(self) -> int | None:
        """The worker's process id (tests kill it to check the restart)."""
        worker = self._box[0]
        return worker.proc.pid if worker is not None else None

    def prompt(self, question: str, response: str, reference: str) -> str:
        return self.settings.template.format(
            question=question, response=response, reference=reference
        )

    def submit(self, question: str, response: str, reference: str) -> Future:
        """Queue one judgment of `response` (an answer text, see response_answer) against
        `reference`; the Future's result is always a Verdict."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the judge is closed")
            self._queue.append((self.prompt(question, response, reference), future))
            self._lock.notify()
        return future

    def close(self) -> None:
        """Stop the dispatcher and kill the worker; waiting judgments get status "error"."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify()
        self._thread.join()
        self._finalizer()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the dispatcher thread --

    def _dispatch(self) -> None:
        s = self.settings
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self._closed:
                    pending = list(self._queue)
                    self._queue.clear()
                    break
                batch = [self._queue.popleft() for _ in range(min(s.batch_size, len(self._queue)))]
            texts = [text for text, _ in batch]
            outputs, status, reason = self._call(texts)
            if outputs is None:
                outputs = [None] * len(batch)
            for (_, future), output in zip(batch, outputs):
                if output is None:
                    verdict = Verdict(
                        0.0, status, {"accuracy": 0.0}, f"judge failed twice: {reason}"
                    )
                else:
                    verdict = parse_judgment(output, s.correct_pattern, s.wrong_pattern)
                future.set_result(verdict)
            self.judged += len(batch)
        for _, future in pending:
            future.set_result(Verdict(0.0, "error", {"accuracy": 0.0}, "the judge was closed"))

    def _call(self, texts: list[str]) -> tuple[list[str] | None, str, str]:
        """The judge's outputs for `texts`, retried once; (None, status, reason) on failure.
        A worker that timed out or died is killed here and started again at the next try."""
        status, reason = "error", ""
        for _attempt in range(2):
            self.calls += 1
            if self._box[0] is None:
                failed = self._start_worker()
                if failed:
                    status, reason = "error", f"the judge's worker could not start: {failed}"
                    continue
            worker = self._box[0]
            try:
                _send(worker.proc.stdin, texts)
                message = worker.receive(self.settings.timeout_s)
            except OSError:
                message = ("died", "the judge's worker was gone")
            if message is not None and message[0] == "ok":
                return message[1], "", ""
            if message is None:
                status, reason = "timeout", f"timed out after {self.settings.timeout_s:g} s"
            else:
                status, reason = "error", str(message[1])
            if message is None or message[0] == "died":
                worker.kill()
                self._box[0] = None
                self.restarts += 1
        return None, status, reason
