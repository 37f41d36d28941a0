"""What a job did, for people: the summary the job runner (``recsys.runner.cli``) prints, and the exit
code it returns once every output is written.

A neutral module (it imports nothing of recsys), so a job package such as ``recsys.compare``
reports without importing the job runner's pipeline; the runner's ``Report`` is ``JobReport``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set


@dataclass
class JobReport:
    """Counts, metrics, timings and tables of one job run, and its exit code."""

    job: str
    lines: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    metrics: Dict[str, Optional[float]] = field(default_factory=dict)
    tables: Dict[str, str] = field(default_factory=dict)
    # Sub-stage wall seconds; not added to the total.
    details: Dict[str, float] = field(default_factory=dict)
    # Stages that ran in a thread beside later ones: their time is not added to the total.
    beside: Set[str] = field(default_factory=set)
    # Non-zero: the result failed a check the config asked for (every output is written).
    exit_code: int = 0

    def add(self, text: str) -> None:
        """Append a line of the summary."""
        self.lines.append(text)

    def render(self) -> str:
        """The summary as text.

        >>> JobReport("pipeline", timings={"train": 2.0, "weights": 1.5, "recommend": 1.0},
        ...           beside={"weights"}).render()
        'recsys pipeline: done in 3.0s (train 2.0s, weights 1.5s beside, recommend 1.0s)'
        """
        total = sum(v for k, v in self.timings.items() if k not in self.beside)
        stages = ", ".join(f"{k} {v:.1f}s{' beside' if k in self.beside else ''}"
                           for k, v in self.timings.items())
        return "\n".join([f"recsys {self.job}: done in {total:.1f}s ({stages})", *self.lines])


class StageTimer:
    """Adds the wall time of a ``with`` block to a report's timings under a stage name, and
    shows progress on stderr (a stage's start and end, with the clock time) for long runs.
    ``beside``: the block runs in a thread beside later stages (``JobReport.beside``).

    The stage takes its place in the timings when the timer is built, so a timer built before
    its block is handed to a thread lists the stage where it was started from, not where the
    thread happened to end:

    >>> report = JobReport("job")
    >>> weights = StageTimer(report, "weights", beside=True)  # its block runs later, in a thread
    >>> with StageTimer(report, "evaluate"):
    ...     pass
    >>> with weights:
    ...     pass
    >>> list(report.timings)
    ['weights', 'evaluate']
    """

    def __init__(self, report: JobReport, stage: str, beside: bool = False):
        self.report, self.stage = report, stage
        report.timings.setdefault(stage, 0.0)
        if beside:
            report.beside.add(stage)

    def __enter__(self):
        self.start = time.perf_counter()
        progress(f"{self.report.job}: {self.stage} started")
        return self

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.start
        self.report.timings[self.stage] = seconds
        progress(f"{self.report.job}: {self.stage} {'failed' if exc[0] else 'done'} "
                  f"in {seconds:.1f}s")
        return False


def progress(text: str) -> None:
    """A progress line on stderr, with the clock time."""
    print(f"recsys {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)
