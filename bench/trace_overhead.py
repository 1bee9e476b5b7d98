#!/usr/bin/env python
"""Cost of running a script under a controller, and how fast breaks and stops land.

One run, all contenders side by side, rounds interleaved so that machine noise
hits every contender alike.  Ratios are against plain ``exec`` of the same
code object; medians over the rounds.

    python bench/trace_overhead.py [--rounds 7] [--requests 200] [--write docs/performance.md]

Contenders:
  untraced      exec(code, ns)
  ours          pyctl.Controller, default mode (no tracing while nothing is asked)
  ours-lines    pyctl.Controller with LINENO_TRACE_ALL (traces every line)
  settrace      a minimal pure-Python controller built on sys.settrace
  nicos-pyctl   upstream nicos-pyctl 1.4.1 (pip install nicos-pyctl==1.4.1), if installed
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyctl  # noqa: E402

N = 400_000
SCRIPT = "<script>"

LIBRARY_SOURCE = """
def scale(value):
    result = value * 3
    return result + 1
"""

WORKLOADS = {
    "a: line-dense toplevel loop": f"""
total = 0
for i in range({N}):
    total += i
    if total < 0:
        total = 0
""",
    "b: toplevel loop calling library code": f"""
total = 0
for i in range({N // 2}):
    total += scale(i)
""",
    "c: loop calling script functions": f"""
def step(value):
    doubled = value * 2
    return doubled + 1
total = 0
for i in range({N // 2}):
    total += step(i)
""",
}


def library_namespace() -> dict:
    ns: dict = {}
    exec(compile(LIBRARY_SOURCE, "library.py", "exec"), ns)
    return {"scale": ns["scale"]}


class SettraceController:
    """What a pure-Python controller has to do: a trace function on every line."""

    def __init__(self) -> None:
        self.request: str | None = None

    def _trace(self, frame: Any, event: str, arg: Any) -> Callable | None:
        if frame.f_code.co_filename != SCRIPT:
            return None
        if event == "line" and self.request is not None:
            raise pyctl.ControlStop(self.request)
        return self._trace

    def start_exec(self, code: Any, ns: dict) -> None:
        sys.settrace(self._trace)
        try:
            exec(code, ns)
        finally:
            sys.settrace(None)


def make_contenders() -> dict[str, Callable[[Any, dict], Any]]:
    contenders: dict[str, Callable[[Any, dict], Any]] = {"untraced": exec}
    ours = pyctl.Controller(lambda frame, arg: None, break_only_in_filename=SCRIPT)
    contenders["ours"] = ours.start_exec
    lines = pyctl.Controller(lambda frame, arg: None, break_only_in_filename=SCRIPT,
                             lineno_behavior=pyctl.LINENO_TRACE_ALL)
    contenders["ours-lines"] = lines.start_exec
    contenders["settrace"] = SettraceController().start_exec
    try:
        from nicospyctl import pyctl as upstream  # type: ignore[import-not-found]
    except ImportError:
        print("nicos-pyctl not installed: pip install nicos-pyctl==1.4.1 (bench extra)")
    else:
        # upstream's default line behaviour reports every line of the script file
        up = upstream.Controller(lambda frame, arg: None, break_only_in_filename=SCRIPT)

        def run_upstream(code: Any, ns: dict) -> None:
            try:
                up.start_exec(code, ns)
            finally:
                # nicos-pyctl leaves its trace function installed after the run,
                # which would slow down every contender measured after it
                sys.settrace(None)

        contenders["nicos-pyctl"] = run_upstream
    return contenders


def measure_overhead(rounds: int) -> dict[str, dict[str, float]]:
    contenders = make_contenders()
    results: dict[str, dict[str, float]] = {}
    for workload, source in WORKLOADS.items():
        code = compile(source, SCRIPT, "exec")
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, run in contenders.items():
                ns = library_namespace()
                t0 = time.perf_counter()
                run(code, ns)
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["untraced"])
        results[workload] = {name: statistics.median(t) / base for name, t in times.items()}
        results[workload]["_untraced_ms"] = base * 1e3
    return results


# -- latency ---------------------------------------------------------------

BUSY_SCRIPT = """
ready.set()
while True:
    x = 1
"""

WAITING_SCRIPT = """
ready.set()
while True:
    if ctl.wait(3600):
        ctl.breakpoint()
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def measure_latency(source: str, requests: int) -> dict[str, list[float]]:
    """Break latency (request -> break function entered) and stop latency
    (request -> ControlStop caught in the script thread), in milliseconds."""
    arrived = threading.Event()
    stamp: list[float] = [0.0]

    def on_break(frame: Any, arg: Any) -> Any:
        stamp[0] = time.perf_counter()
        arrived.set()
        return ctl.wait_for_continue()

    ctl = pyctl.Controller(on_break, break_only_in_filename=SCRIPT)
    resumed = threading.Event()
    ctl.set_observer(lambda status, lineno: status == pyctl.STATUS_RUNNING and resumed.set())
    code = compile(source, SCRIPT, "exec")
    result: dict[str, list[float]] = {"break": [], "stop": []}

    # breaks: one long run, break and continue repeatedly
    ready = threading.Event()
    stopped = threading.Event()

    def runner() -> None:
        try:
            ctl.start_exec(code, {"ready": ready, "ctl": ctl})
        except pyctl.ControlStop:
            stamp[0] = time.perf_counter()
            stopped.set()

    thread = threading.Thread(target=runner)
    thread.start()
    ready.wait()
    for _ in range(requests):
        arrived.clear()
        t0 = time.perf_counter()
        ctl.set_break()
        arrived.wait()
        result["break"].append((stamp[0] - t0) * 1e3)
        resumed.clear()
        ctl.set_continue()
        resumed.wait()
    ctl.set_stop()
    thread.join()

    # stops: a fresh run per request
    for _ in range(requests):
        ready.clear()
        stopped.clear()
        thread = threading.Thread(target=runner)
        thread.start()
        ready.wait()
        t0 = time.perf_counter()
        ctl.set_stop()
        stopped.wait()
        result["stop"].append((stamp[0] - t0) * 1e3)
        thread.join()
    return result


def format_report(overhead: dict[str, dict[str, float]],
                  latency: dict[str, dict[str, list[float]]], rounds: int,
                  requests: int) -> str:
    names = [n for n in next(iter(overhead.values())) if not n.startswith("_")]
    lines = [
        f"### Script overhead (median of {rounds} interleaved rounds, ratio to untraced exec)",
        "",
        "| workload | untraced ms | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for workload, row in overhead.items():
        cells = " | ".join(f"{row[n]:.2f}x" for n in names)
        lines.append(f"| {workload} | {row['_untraced_ms']:.1f} | {cells} |")
    lines += [
        "",
        f"### Request latency of `ours` ({requests} requests each, milliseconds)",
        "",
        "| script | request | median | p99 | max |",
        "|---|---|---:|---:|---:|",
    ]
    for script_name, kinds in latency.items():
        for kind, values in kinds.items():
            lines.append(
                f"| {script_name} | {kind} | {statistics.median(values):.3f} | "
                f"{percentile(values, 0.99):.3f} | {max(values):.3f} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, report: str) -> None:
    begin, end = "<!-- trace_overhead:begin -->", "<!-- trace_overhead:end -->"
    text = path.read_text() if path.exists() else "# Performance\n"
    block = f"{begin}\n{report}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## pyctl: trace overhead and request latency\n\n" + \
            f"Produced by `bench/trace_overhead.py`.\n\n{block}\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--write", type=Path, help="update this markdown file")
    args = parser.parse_args()
    overhead = measure_overhead(args.rounds)
    latency = {
        "busy loop": measure_latency(BUSY_SCRIPT, args.requests),
        "in interruptible wait": measure_latency(WAITING_SCRIPT, args.requests),
    }
    report = format_report(overhead, latency, args.rounds, args.requests)
    print(report)
    if args.write:
        write_section(args.write, report)
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()
