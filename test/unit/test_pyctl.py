"""The pyctl controller, driven from real threads.

Synchronisation is by events the script itself sets; no test depends on timing.
"""

from __future__ import annotations

import gc
import queue
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from pyctl import (
    LINENO_TRACE_ALL,
    REQUEST_BREAK,
    REQUEST_STOP,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    STATUS_INBREAK,
    STATUS_RUNNING,
    STATUS_STOPPING,
    Controller,
    ControlStop,
)
from pyctl import stop_thread as pyctl_stop_thread

WAIT = 10.0  # generous upper bound for an event that must happen


def script(text: str) -> Any:
    return compile(textwrap.dedent(text).lstrip("\n"), "<script>", "exec")


class Harness:
    """A controller whose break function records the break and waits for continue."""

    def __init__(self, **options: Any) -> None:
        self.breaks: list[tuple[str, int, Any]] = []
        self.in_break = threading.Event()
        self.statuses: list[tuple[int, int]] = []
        self.ctl = Controller(self._on_break, **options)
        self.ctl.set_observer(lambda status, lineno: self.statuses.append((status, lineno)))
        self.result: BaseException | None = None
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None

    def _on_break(self, frame: Any, arg: Any) -> Any:
        self.breaks.append((frame.f_code.co_name, frame.f_lineno, arg))
        self.in_break.set()
        return self.ctl.wait_for_continue()

    def run(self, code: Any, namespace: dict) -> None:
        def target() -> None:
            try:
                self.ctl.start_exec(code, namespace)
            except BaseException as err:  # noqa: BLE001 - the test inspects it
                self.result = err
            finally:
                self.finished.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self) -> None:
        assert self.finished.wait(WAIT), "script did not finish"
        assert self.thread is not None
        self.thread.join(WAIT)

    def wait_break(self) -> None:
        assert self.in_break.wait(WAIT), "script did not reach a break"
        self.in_break.clear()


def gated_namespace(**extra: Any) -> dict:
    return {"ready": threading.Event(), "gate": threading.Event(), **extra}


def test_break_and_continue_from_another_thread() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(counter=[0])
    h.run(script("""
        ready.set()
        while not gate.is_set():
            counter[0] += 1
        done = True
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break("pause please")
    h.wait_break()
    assert h.ctl.status == STATUS_INBREAK
    name, lineno, arg = h.breaks[0]
    assert name == "<module>" and lineno in (2, 3) and arg == "pause please"
    assert h.ctl.lineno == lineno
    assert h.ctl.currentframe is h.ctl.toplevelframe
    frozen = ns["counter"][0]
    assert ns["counter"][0] == frozen  # the script does not run while in break
    ns["gate"].set()
    h.ctl.set_continue()
    h.join()
    assert h.result is None and ns["done"]
    assert h.ctl.status == STATUS_IDLE


def test_stop_from_another_thread_runs_finally_and_passes_except_exception() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(log=[])
    h.run(script("""
        try:
            try:
                ready.set()
                while True:
                    pass
            except Exception:
                log.append("swallowed")
        finally:
            log.append("finally")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_stop("halt")
    h.join()
    assert isinstance(h.result, ControlStop) and h.result.args == ("halt",)
    assert ns["log"] == ["finally"]
    assert h.ctl.status == STATUS_IDLEEXC
    assert [s for s, _ in h.statuses] == [STATUS_RUNNING, STATUS_STOPPING, STATUS_IDLEEXC]


def test_stop_while_in_break() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(log=[])
    h.run(script("""
        ready.set()
        try:
            while True:
                pass
        finally:
            log.append("cleanup")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break()
    h.wait_break()
    h.ctl.set_stop("from break")
    h.join()
    assert isinstance(h.result, ControlStop) and h.result.args == ("from break",)
    assert ns["log"] == ["cleanup"]
    statuses = [s for s, _ in h.statuses]
    assert statuses == [STATUS_RUNNING, STATUS_INBREAK, STATUS_STOPPING, STATUS_IDLEEXC]


def test_stop_propagates_out_of_nested_script_functions() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(log=[])
    h.run(script("""
        def inner():
            ready.set()
            while True:
                pass
        def outer():
            try:
                inner()
            except Exception:
                log.append("caught in outer")
            log.append("after inner")
        outer()
        log.append("after outer")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_stop()
    h.join()
    assert isinstance(h.result, ControlStop)
    assert ns["log"] == []


def library_loop(armed: Any, trail: list) -> None:
    """Library code: not part of the script's file."""
    armed.acquire()  # a C call: no Python lines run while blocked
    armed.release()
    for i in range(100):
        trail.append(i)


def test_toplevel_mode_does_not_break_inside_helpers() -> None:
    h = Harness(break_only_in_toplevel=True)
    armed = threading.Event()
    ns = gated_namespace(trail=[], armed=armed, library_loop=library_loop)
    h.run(script("""
        def helper():
            ready.set()
            armed.wait()
            for i in range(100):
                trail.append(i)
        helper()
        after = len(trail)
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break()
    armed.set()
    h.wait_break()
    name, lineno, _ = h.breaks[0]
    assert (name, lineno) == ("<module>", 7)
    assert len(ns["trail"]) == 100  # the helper ran to its end first
    h.ctl.set_continue()
    h.join()
    assert ns["after"] == 100


def test_filename_mode_breaks_in_script_functions_but_not_in_library_code() -> None:
    h = Harness(break_only_in_filename="<script>")
    armed = threading.Lock()
    armed.acquire()
    ns = gated_namespace(trail=[], armed=armed, library_loop=library_loop)
    h.run(script("""
        def helper():
            ready.set()
            library_loop(armed, trail)
            x = 1
            return x
        helper()
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break()
    armed.release()
    h.wait_break()
    name, lineno, _ = h.breaks[0]
    assert (name, lineno) == ("helper", 4)
    assert len(ns["trail"]) == 100
    assert h.ctl.currentframe.f_code.co_name == "helper"
    assert h.ctl.toplevelframe.f_code.co_name == "<module>"
    h.ctl.set_continue()
    h.join()
    assert h.result is None


def test_anywhere_mode_breaks_inside_library_code() -> None:
    h = Harness()
    armed = threading.Lock()
    armed.acquire()
    ns = {"trail": [], "armed": armed, "library_loop": library_loop}
    h.run(script("""
        library_loop(armed, trail)
    """), ns)
    h.ctl.set_break()
    armed.release()
    h.wait_break()
    assert h.breaks[0][0] == "library_loop"
    assert len(ns["trail"]) < 100
    h.ctl.set_continue()
    h.join()
    assert len(ns["trail"]) == 100


def test_break_reaches_python_called_from_c() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(hits=[])
    h.run(script("""
        def step(i):
            if i == 0:
                ready.set()
                gate.wait()
            hits.append(i)
            return i
        list(map(step, range(1000)))
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break()
    ns["gate"].set()
    h.wait_break()
    assert h.breaks[0][0] == "step"
    assert len(ns["hits"]) < 1000
    h.ctl.set_continue()
    h.join()
    assert len(ns["hits"]) == 1000


def test_observer_sees_break_continue_sequence_and_no_trace_while_running() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(seen_trace=[])
    h.run(script("""
        import sys
        ready.set()
        gate.wait()
        x = 1
    """), ns)
    assert ns["ready"].wait(WAIT)
    assert h.ctl.lineno == 3
    assert h.ctl.trace_installed is False
    h.ctl.set_break("b")
    assert h.ctl.trace_installed is True
    ns["gate"].set()
    h.wait_break()
    assert h.ctl.trace_installed is False
    h.ctl.set_continue()
    h.join()
    assert h.statuses == [(STATUS_RUNNING, -1), (STATUS_INBREAK, 4), (STATUS_RUNNING, 4),
                          (STATUS_IDLE, 4)]


def test_line_tracing_mode_reports_every_line() -> None:
    h = Harness(break_only_in_filename="<script>", lineno_behavior=LINENO_TRACE_ALL)
    h.ctl.start_exec(script("""
        a = 1
        for i in range(2):
            b = i
        c = 3
    """), {})
    lines = [lineno for status, lineno in h.statuses if status == STATUS_RUNNING]
    assert lines == [-1, 1, 2, 3, 2, 3, 2, 4]
    assert h.statuses[-1] == (STATUS_IDLE, 4)


def test_wait_is_woken_by_break_and_resumes_after_continue() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(ctl=h.ctl, woken=[])
    h.run(script("""
        ready.set()
        woken.append(ctl.wait(3600))
        ctl.breakpoint()
        woken.append("resumed")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break("b")
    h.wait_break()
    assert ns["woken"] == [True]
    assert h.breaks[0][1] == 3
    h.ctl.set_continue()
    h.join()
    assert ns["woken"] == [True, "resumed"]


def test_wait_is_woken_by_stop() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(ctl=h.ctl, woken=[])
    h.run(script("""
        ready.set()
        woken.append(ctl.wait(3600))
        ctl.breakpoint()
        woken.append("not reached")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_stop("now")
    h.join()
    assert ns["woken"] == [True]
    assert isinstance(h.result, ControlStop)


def test_wait_ignores_rejected_requests() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(ctl=h.ctl, woken=[], only_stop=lambda request, arg: request == REQUEST_STOP)
    h.run(script("""
        ready.set()
        woken.extend((ctl.wait(3600, only_stop), ctl.pending()[0]))
        not_reached = True
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break()
    assert h.ctl.pending()[0] == REQUEST_BREAK
    h.ctl.set_stop()
    h.join()
    assert ns["woken"] == [True, REQUEST_STOP]
    assert isinstance(h.result, ControlStop)


def test_wait_times_out_without_request() -> None:
    h = Harness()
    assert h.ctl.start(lambda: h.ctl.wait(0.01)) is False


def test_misuse_gives_clear_errors() -> None:
    h = Harness(break_only_in_filename="<script>")
    with pytest.raises(RuntimeError, match="not in break"):
        h.ctl.set_continue()
    with pytest.raises(RuntimeError, match="no script is running"):
        h.ctl.set_break()
    with pytest.raises(RuntimeError, match="no script is running"):
        h.ctl.set_stop()
    with pytest.raises(RuntimeError, match="script thread"):
        h.ctl.breakpoint()
    with pytest.raises(TypeError):
        Controller("not callable")
    with pytest.raises(ValueError, match="lineno_behavior"):
        Controller(lambda f, a: None, lineno_behavior=7)

    ns = gated_namespace(ctl=h.ctl, errors=[])
    h.run(script("""
        try:
            ctl.start(lambda: None)
        except RuntimeError as err:
            errors.append(str(err))
        ready.set()
        gate.wait()
        x = 1
    """), ns)
    assert ns["ready"].wait(WAIT)
    assert "already running" in ns["errors"][0]
    with pytest.raises(RuntimeError, match="not in break"):
        h.ctl.set_continue()
    h.ctl.set_break()
    ns["gate"].set()
    h.wait_break()
    with pytest.raises(RuntimeError, match="already in break"):
        h.ctl.set_break()
    h.ctl.set_continue()
    h.join()


def test_start_returns_result_and_propagates_exceptions() -> None:
    h = Harness()
    assert h.ctl.start(lambda: 42) == 42
    assert h.ctl.status == STATUS_IDLE

    def fail() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        h.ctl.start(fail)
    assert h.ctl.status == STATUS_IDLEEXC


def test_get_stacktrace_shows_script_frames_only() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(ctl=h.ctl, traces=[])
    h.run(script("""
        def deeper():
            ready.set()
            gate.wait()
        deeper()
    """), ns)
    assert ns["ready"].wait(WAIT)
    trace = h.ctl.get_stacktrace()
    ns["gate"].set()
    h.join()
    assert 'File "<script>", line 4, in <module>' in trace
    assert 'File "<script>", line 3, in deeper' in trace
    assert "threading.py" not in trace and "test_pyctl" not in trace


def test_previous_tracer_is_restored_after_a_break() -> None:
    calls: list[str] = []

    def tracer(frame: Any, event: str, arg: Any) -> Callable | None:
        calls.append(event)
        return None

    h = Harness(break_only_in_filename="<script>")
    result: list[Any] = []

    def body() -> None:
        sys.settrace(tracer)
        try:
            h.ctl.start_exec(script("""
                ctl.set_break()
                x = 1
            """), {"ctl": h.ctl})
            result.append(sys.gettrace())
        finally:
            sys.settrace(None)

    h.in_break = threading.Event()
    t = threading.Thread(target=body)
    t.start()
    h.wait_break()
    h.ctl.set_continue()
    t.join(WAIT)
    assert result == [tracer]


def test_many_start_stop_cycles_do_not_leak() -> None:
    ctl = Controller(lambda frame, arg: None, break_only_in_filename="<script>")
    code = script("""
        ctl.set_stop(token)
        never = 1
    """)
    token = object()
    namespace = {"ctl": ctl, "token": token}

    def cycles(n: int) -> None:
        for _ in range(n):
            try:
                ctl.start_exec(code, namespace)
            except ControlStop:
                pass
            else:
                raise AssertionError("stop did not happen")

    cycles(200)  # warm-up: caches, interned strings
    gc.collect()
    refs_before = sys.getrefcount(token)
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    mem_before = tracemalloc.get_traced_memory()[0]
    cycles(10_000)
    gc.collect()
    mem_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert sys.getrefcount(token) == refs_before
    assert len(gc.get_objects()) - objects_before < 50
    assert mem_after - mem_before < 64 * 1024
    assert ctl.status == STATUS_IDLEEXC


# -- scripts that ignore the stop ---------------------------------------------------------


def armed_call(ctl: Controller, ready: threading.Event) -> None:
    """Library code: waits until a stop is pending and raises it here, inside
    whatever try block of the script called us."""
    ready.set()
    assert ctl.wait(WAIT)
    ctl.breakpoint()


def test_swallowed_stop_is_raised_again_and_reported() -> None:
    h = Harness(break_only_in_filename="<script>")
    ignored: list[tuple[int, Any]] = []
    h.ctl.set_ignored_handler(lambda frame, arg: ignored.append((frame.f_lineno, arg)))
    ns = gated_namespace(log=[], armed_call=armed_call, ctl=h.ctl)
    h.run(script("""
        while True:
            try:
                armed_call(ctl, ready)
            except BaseException as err:
                log.append(type(err).__name__)
            log.append("went on")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_stop("halt")
    h.join()
    assert isinstance(h.result, ControlStop) and h.result.args == ("halt",)
    # caught once (the handler ran as cleanup), raised again at the next line
    assert ns["log"] == ["ControlStop"]
    assert ignored == [(6, "halt")]
    assert [s for s, _ in h.statuses] == [STATUS_RUNNING, STATUS_STOPPING, STATUS_IDLEEXC]


def test_cleanup_that_handles_other_exceptions_is_not_taken_for_ignoring() -> None:
    h = Harness(break_only_in_filename="<script>")
    ignored: list[Any] = []
    h.ctl.set_ignored_handler(lambda frame, arg: ignored.append(arg))
    ns = gated_namespace(log=[])
    h.run(script("""
        def tidy():
            try:
                raise KeyError("inner")
            except KeyError:
                log.append("handled inner")
            log.append("tidied")
        try:
            ready.set()
            while True:
                pass
        finally:
            tidy()
            log.append("cleanup done")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_stop("halt")
    h.join()
    assert isinstance(h.result, ControlStop)
    assert ns["log"] == ["handled inner", "tidied", "cleanup done"]
    assert ignored == []


def test_insisting_stop_ends_endless_cleanup() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(log=[], cleaning=threading.Event())
    h.run(script("""
        try:
            ready.set()
            while True:
                pass
        finally:
            cleaning.set()
            while True:
                try:
                    log.append(1) if not log else None
                except BaseException:
                    log.append("caught")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_stop("first")
    assert ns["cleaning"].wait(WAIT)
    # the plain stop lets the cleanup run: nothing is pending any more
    assert h.ctl.pending() == (0, None) and not h.ctl.insisting
    with pytest.raises(RuntimeError, match="stopping"):
        h.ctl.set_break()
    h.ctl.set_stop("second", insist=True)
    h.join()
    assert isinstance(h.result, ControlStop) and h.result.args == ("second",)
    assert not h.ctl.insisting  # cleared when the run ends
    assert STATUS_INBREAK not in [s for s, _ in h.statuses]


def library_after_stop(ctl: Controller, record: list) -> None:
    """Library code that swallows the stop twice."""
    try:
        ctl.breakpoint()
    except ControlStop:
        record.append(ctl.pending())
        record.append(ctl.wait(WAIT))  # returns at once: the stop stays armed
    try:
        ctl.breakpoint()
    except ControlStop:
        record.append("raised again")


def test_insisting_stop_stays_pending_for_wait_and_breakpoint() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(record=[], ctl=h.ctl, library_after_stop=library_after_stop)
    # one line: no new line event between the gate and the library call
    h.run(script("""
        ready.set(); gate.wait(); library_after_stop(ctl, record)
        record.append("next line ran")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_stop("firm", insist=True)
    assert h.ctl.insisting
    ns["gate"].set()
    h.join()
    assert isinstance(h.result, ControlStop) and h.result.args == ("firm",)
    assert ns["record"] == [(REQUEST_STOP, "firm"), True, "raised again"]


def test_insisting_stop_from_break_keeps_insisting() -> None:
    h = Harness(break_only_in_filename="<script>")
    ns = gated_namespace(log=[])
    h.run(script("""
        try:
            ready.set()
            while True:
                pass
        finally:
            try:
                log.append("cleanup")
            finally:
                log.append("inner cleanup")
    """), ns)
    assert ns["ready"].wait(WAIT)
    h.ctl.set_break()
    h.wait_break()
    h.ctl.set_stop("now", insist=True)
    h.join()
    assert isinstance(h.result, ControlStop) and h.result.args == ("now",)
    # raised again at the first line of each cleanup block
    assert ns["log"] == []


# -- other threads ------------------------------------------------------------------------


class ScriptThread:
    """A thread running a function of a script, recording how it ended."""

    def __init__(self, code: str, name: str, **namespace: Any) -> None:
        self.ns: dict[str, Any] = {"started": threading.Event(), "log": [], **namespace}
        exec(script(code), self.ns)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(self.ns[name],), daemon=True)
        self.thread.start()
        assert self.ns["started"].wait(WAIT)

    def _run(self, func: Callable[[], None]) -> None:
        try:
            func()
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            self.error = err

    def join(self) -> None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "thread did not end"


def test_stop_thread_reaches_a_thread_that_swallows_the_stop() -> None:
    release = threading.Event()
    worker = ScriptThread("""
        def worker():
            try:
                started.set()
                while True:
                    try:
                        release.wait()
                    except BaseException as err:
                        log.append(type(err).__name__)
            finally:
                log.append("finally")
    """, "worker", release=release)
    # blocked in C: the stop acts when the call returns
    assert pyctl_stop_thread(worker.thread.ident, "bye", filename="<script>")
    release.set()
    worker.join()
    assert isinstance(worker.error, ControlStop) and worker.error.args == ("bye",)
    # the first ControlStop was caught or not, depending on the line it met
    # first; either way the thread ended and its finally block ran
    assert worker.ns["log"][-1] == "finally"
    assert set(worker.ns["log"][:-1]) <= {"ControlStop"}
    assert pyctl_stop_thread(worker.thread.ident) is False  # gone


def test_stop_thread_insisting_ends_endless_cleanup() -> None:
    cleaning = threading.Event()
    worker = ScriptThread("""
        def worker():
            try:
                started.set()
                while True:
                    pass
            finally:
                cleaning.set()
                while True:
                    pass
    """, "worker", cleaning=cleaning)
    assert pyctl_stop_thread(worker.thread.ident, "plain", filename="<script>")
    assert cleaning.wait(WAIT)
    assert worker.thread.is_alive()  # a plain stop lets the cleanup run
    assert pyctl_stop_thread(worker.thread.ident, "firm", filename="<script>", insist=True)
    worker.join()
    assert isinstance(worker.error, ControlStop)


def test_stop_thread_misuse() -> None:
    with pytest.raises(ValueError, match="calling thread"):
        pyctl_stop_thread(threading.get_ident())
    with pytest.raises(TypeError, match="filename"):
        pyctl_stop_thread(1, filename=b"<script>")
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    assert finished.ident is not None
    assert pyctl_stop_thread(finished.ident) is False


def test_insist_and_stop_thread_do_not_leak() -> None:
    token = object()
    ctl = Controller(lambda frame, arg: None, break_only_in_filename="<script>")
    code = script("""
        ctl.set_stop(token, insist=True)
        never = 1
    """)
    namespace = {"ctl": ctl, "token": token}
    for _ in range(100):
        with pytest.raises(ControlStop):
            ctl.start_exec(code, namespace)
    gc.collect()
    refs_before = sys.getrefcount(token)
    for _ in range(1000):
        with pytest.raises(ControlStop):
            ctl.start_exec(code, namespace)
    for _ in range(50):
        worker = ScriptThread("""
            def worker():
                started.set()
                while True:
                    pass
        """, "worker")
        assert pyctl_stop_thread(worker.thread.ident, token, filename="<script>")
        worker.join()
        worker.error = None  # holds the ControlStop, which holds the token
    gc.collect()
    assert sys.getrefcount(token) == refs_before


class LibraryWorker:
    """A pool worker: its loop is library code (this file), the jobs it runs
    may be script functions; a job's exception is its result, by type name."""

    def __init__(self) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            func, arg = self.jobs.get()
            if func is None:
                return
            try:
                self.results.put(func(arg))
            except BaseException as err:  # noqa: BLE001 - like a pool worker
                self.results.put(type(err).__name__)

    def close(self) -> None:
        self.jobs.put((None, None))
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


def test_cancelled_thread_stop_lets_the_thread_run_script_code_again() -> None:
    # A pool worker that a script keeps (its loop is library code, here this
    # file): stopped in one run, it must be able to run the next run's work.
    pool = LibraryWorker()

    ns: dict[str, Any] = {}
    exec(script("""
        def job(n):
            return n * 2
    """), ns)

    def previous_tracer(frame: Any, event: str, arg: Any) -> None:
        return None

    # a Python-level tracer that the stop displaces and cancel() puts back
    pool.jobs.put((lambda _: sys.settrace(previous_tracer), None))
    pool.results.get(timeout=WAIT)
    stopper = pyctl_stop_thread(pool.thread.ident, "stop", filename="<script>")
    assert stopper
    pool.jobs.put((ns["job"], 1))
    assert pool.results.get(timeout=WAIT) == "ControlStop"
    pool.jobs.put((ns["job"], 2))
    assert pool.results.get(timeout=WAIT) == "ControlStop"  # still stopped: poisoned
    stopper.cancel()
    pool.jobs.put((ns["job"], 3))
    assert pool.results.get(timeout=WAIT) == 6
    pool.jobs.put((lambda _: sys.gettrace(), None))
    assert pool.results.get(timeout=WAIT) is previous_tracer
    pool.jobs.put((lambda _: sys.settrace(None), None))
    pool.results.get(timeout=WAIT)
    pool.close()


def test_stop_thread_with_expect_refuses_another_thread_with_the_same_ident() -> None:
    release = threading.Event()
    worker = ScriptThread("""
        def worker():
            started.set()
            release.wait()
            log.append("after the wait")
    """, "worker", release=release)
    frames = sys._current_frames()
    outermost = frames[worker.thread.ident]
    while outermost.f_back is not None:
        outermost = outermost.f_back
    foreign = sys._getframe()  # a frame of this thread, not of the worker's stack
    assert pyctl_stop_thread(worker.thread.ident, "x", filename="<script>",
                             expect=foreign) is False
    assert pyctl_stop_thread(worker.thread.ident, "x", filename="<script>",
                             expect=outermost)
    del frames, outermost, foreign
    release.set()
    worker.join()
    assert isinstance(worker.error, ControlStop)


def test_python_code_run_by_the_interpreter_before_the_script_is_not_its_toplevel() -> None:
    # A gc callback (or an audit hook) may run Python code in the script thread
    # just before the script's first frame: it must not be taken for the toplevel
    # frame, or break_only_in_toplevel would never break.
    collected: list[str] = []

    def on_gc(phase: str, info: dict) -> None:
        collected.append(phase)

    h = Harness(break_only_in_toplevel=True)
    ns = gated_namespace()
    code = script("""
        ready.set()
        while not gate.is_set():
            pass
    """)
    threshold = gc.get_threshold()
    gc.callbacks.append(on_gc)
    gc.set_threshold(1)  # a collection at (nearly) every allocation: also at the start
    try:
        h.run(code, ns)
        assert ns["ready"].wait(WAIT)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(on_gc)
    assert collected, "no collection ran"
    h.ctl.set_break()
    h.wait_break()
    assert h.ctl.toplevelframe.f_code is code
    ns["gate"].set()
    h.ctl.set_continue()
    h.join()
    assert h.result is None


def test_stop_thread_interrupt_reaches_library_code_insist_does_not() -> None:
    progress: list[int] = [0]
    seen_after_stop = threading.Event()
    mark: list[int | None] = [None]

    def library_spin() -> None:  # library code: not in "<script>"
        while True:
            progress[0] += 1
            if mark[0] is not None and progress[0] > mark[0] + 1000:
                seen_after_stop.set()

    worker = ScriptThread("""
        def worker():
            started.set()
            library_spin()
    """, "worker", library_spin=library_spin)
    assert pyctl_stop_thread(worker.thread.ident, "firm", filename="<script>", insist=True)
    mark[0] = progress[0]
    # insisting acts only at lines of script code: the library loop goes on
    assert seen_after_stop.wait(WAIT)
    assert worker.thread.is_alive()
    assert pyctl_stop_thread(worker.thread.ident, "now", filename="<script>", insist=True,
                             interrupt=True)
    worker.join()
    assert isinstance(worker.error, ControlStop)


def test_release_on_entry_ends_the_stop_at_the_next_fresh_call_into_script_code() -> None:
    pool = LibraryWorker()

    ns: dict[str, Any] = {}
    exec(script("""
        def inner(n):
            return n + 1
        def job(n):
            return inner(n) * 2
    """), ns)
    stopper = pyctl_stop_thread(pool.thread.ident, "stop", filename="<script>")
    assert stopper
    stopper.release_on_entry()
    assert stopper.active
    # the call into job() comes from library code: released, job and inner run
    pool.jobs.put((ns["job"], 1))
    assert pool.results.get(timeout=WAIT) == 4
    assert not stopper.active
    pool.close()
