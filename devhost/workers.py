"""Language worker processes of the local Functions host, as ``FUNCTIONS_WORKER_PROCESS_COUNT`` asks.

The Functions host keeps the triggers (listing, receipts, message locks, output bindings) and hands
each invocation to one of N Python worker processes, which import the app and run the function on a
thread pool of their own (``PYTHON_THREADPOOL_THREAD_COUNT``). Here each worker is a spawned process
reached through a pipe: the trigger value goes in pickled, the output bindings' values come back.
A worker that dies fails the invocations it held (their blobs come back on a later pass, their
messages are abandoned) and is started again, as the host restarts its worker.
"""
from __future__ import annotations

import importlib
import itertools
import logging
import multiprocessing
import os
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

log = logging.getLogger(__name__)

PROCESS_COUNT_SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"
THREADS_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"
MAX_PROCESS_COUNT = 10          # the Functions host's own limit for the setting


class FunctionFailed(Exception):
    """The function raised in a worker process; the message is the worker's traceback."""


class WorkerLost(Exception):
    """The worker process ended while it held the invocation."""


def process_count(env: Mapping[str, str]) -> int:
    """``FUNCTIONS_WORKER_PROCESS_COUNT`` (1 to 10; default 1), read as the Functions host reads it."""
    text = (env.get(PROCESS_COUNT_SETTING) or "1").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_PROCESS_COUNT:
        from shared.errors import ConfigurationError

        raise ConfigurationError(f"setting {PROCESS_COUNT_SETTING} is {text!r}; it must be a whole number "
                                 f"from 1 to {MAX_PROCESS_COUNT}")
    return int(text)


def _thread_count(env: Mapping[str, str]) -> int:
    text = (env.get(THREADS_SETTING) or "").strip()
    # The Python worker's default on Python 3.9 and later.
    return int(text) if text.isdigit() and int(text) > 0 else min(32, (os.cpu_count() or 1) + 4)


class _Worker:
    """One worker process and the invocations it holds."""

    def __init__(self, app_ref: str, env: Mapping[str, str], index: int):
        self.index = index
        context = multiprocessing.get_context("spawn")      # never fork a process that runs threads
        self.conn, child = context.Pipe()
        # The worker logs at the host's level, to the same stderr.
        level = logging.getLogger().getEffectiveLevel()
        self.process = context.Process(target=_worker_main, args=(child, app_ref, dict(env), level),
                                       name=f"functions-worker-{index}", daemon=True)
        self.process.start()
        child.close()
        self.pending: dict[int, Future] = {}
        self.send_lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name=f"host-worker-{index}-reader", daemon=True)
        self.reader.start()

    def submit(self, call_id: int, message: tuple) -> Future:
        future: Future = Future()
        with self.send_lock:
            if not self.process.is_alive():
                future.set_exception(WorkerLost(f"worker process {self.index} is not running"))
                return future
            self.pending[call_id] = future
            try:
                self.conn.send(message)
            except OSError as exc:          # it ended since: the invocation goes back, as a lost one
                del self.pending[call_id]
                future.set_exception(WorkerLost(f"worker process {self.index} ended ({exc})"))
        return future

    def _read(self) -> None:
        try:
            while True:
                call_id, ok, value = self.conn.recv()
                with self.send_lock:
                    future = self.pending.pop(call_id, None)
                if future is None:
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(FunctionFailed(value))
        except (EOFError, OSError):
            pass
        with self.send_lock:
            lost, self.pending = self.pending, {}
        for future in lost.values():
            future.set_exception(WorkerLost(f"worker process {self.index} ended"))

    def stop(self, timeout: float) -> None:
        with self.send_lock:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()         # past the host's grace, as the Functions host ends its worker
            self.process.join(5)
        self.conn.close()


class WorkerPool:
    """N worker processes; each invocation goes to the one holding the fewest."""

    def __init__(self, app_ref: str, env: Mapping[str, str], count: int):
        self._app_ref, self._env = app_ref, dict(env)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._workers = [_Worker(app_ref, self._env, i) for i in range(count)]

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers if worker.process.pid is not None]

    def invoke(self, function: str, trigger_name: str, trigger_value: Any, outputs: list[str]) -> dict[str, list]:
        """Run ``function`` in a worker; returns each output binding's values. Raises FunctionFailed
        when the function raised, WorkerLost when its worker ended under it."""
        with self._lock:
            for i, worker in enumerate(self._workers):
                if not worker.process.is_alive():
                    log.warning("functions worker process %d (pid %s) ended (exit code %s); starting another",
                                worker.index, worker.process.pid, worker.process.exitcode)
                    worker.stop(0)
                    self._workers[i] = _Worker(self._app_ref, self._env, worker.index)
            worker = min(self._workers, key=lambda w: len(w.pending))
            call_id = next(self._ids)
            future = worker.submit(call_id, (call_id, function, trigger_name, trigger_value, outputs))
        return future.result()

    def stop(self, timeout: float) -> None:
        for worker in self._workers:
            worker.stop(timeout)


def _worker_main(conn, app_ref: str, env: dict[str, str], log_level: int) -> None:
    """A worker process: import the app as the Python worker does, then run what the host sends."""
    os.environ.update(env)          # the functions read their settings from the environment, as in Azure
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [worker %(process)d]: "
                                                "%(message)s")
    from devhost.host import _Capture, read_functions

    module_name, _, attribute = app_ref.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app")
    calls = {spec.name: spec.call for spec in read_functions(app)}
    lock = threading.Lock()

    def run(call_id: int, function: str, trigger_name: str, trigger_value: Any, outputs: list[str]) -> None:
        captured = {name: _Capture() for name in outputs}
        reply: tuple[int, bool, dict[str, list[Any]] | str]     # the outputs, or the failure's traceback
        try:
            calls[function](**{trigger_name: trigger_value}, **captured)
            reply = (call_id, True, {name: capture.values for name, capture in captured.items()})
        except Exception:
            reply = (call_id, False, traceback.format_exc())
        with lock:
            conn.send(reply)

    with ThreadPoolExecutor(max_workers=_thread_count(env), thread_name_prefix="worker") as pool:
        while (message := conn.recv()) is not None:
            pool.submit(run, *message)
