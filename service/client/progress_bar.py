"""A one-line progress bar for ``pulmoseg segment``, driven by the server's progress events.

The events already carry a monotone overall fraction and the stage name, so the bar is a pure
function of the last event; it redraws in place on a terminal and prints one line per stage
change otherwise (logs of CI jobs and PACS scripts stay readable).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from service.core.progress import ProgressStage

BAR_WIDTH = 30


def render_bar(stage: str, fraction: float, elapsed_s: float, queue_position: int = 0) -> str:
    """``[#########.........]  45% inference  12.3 s`` (or the queue position while waiting)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    filled = int(round(fraction * BAR_WIDTH))
    label = f"queued (position {queue_position})" if queue_position > 0 else str(stage)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"[{bar}] {fraction:4.0%} {label:<22} {elapsed_s:6.1f} s"


class ProgressBar:
    """Callable as a client progress callback: ``bar(stage, fraction)``."""

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = (
            self._stream.isatty() if interactive is None else interactive
        )  # a terminal gets one line redrawn; a log gets one line per stage
        self._started = time.monotonic()
        self._last_label = ""
        self.queue_position = 0

    def __call__(self, stage: ProgressStage | str, fraction: float) -> None:
        elapsed = time.monotonic() - self._started
        line = render_bar(str(stage), fraction, elapsed, self.queue_position)
        label = f"{stage}:{self.queue_position}"
        if self._interactive:
            self._stream.write("\r" + line)
        elif label != self._last_label:
            self._stream.write(line + "\n")
        self._last_label = label
        self._stream.flush()

    def queued(self, position: int) -> None:
        """Show the queue position (0 once the study has a worker)."""
        self.queue_position = max(int(position), 0)
        self(ProgressStage.RECEIVING, 0.0)

    def close(self) -> None:
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()
