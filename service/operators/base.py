"""The per-study state shared by the operators of one graph run, and the operator base class."""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.deploy.core import Operator, OperatorSpec

log = logging.getLogger(__name__)


@dataclass
class StudyRun:
    """Inputs, outputs and bookkeeping of one study passing through the graph.

    Exactly one of ``instances`` (uploaded bytes) or ``input_dir`` is the source.
    """

    instances: list[bytes] | None = None
    input_dir: Path | None = None
    output_dir: Path | None = None
    segmentation_type: str = "BINARY"
    on_progress: Callable[[str, float], None] | None = None
    is_cancelled: Callable[[], bool] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def progress(self, stage: str, fraction: float) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, fraction)

    def check_cancelled(self) -> None:
        if self.is_cancelled is not None and self.is_cancelled():
            raise CancelledError("the client cancelled the study")


class StageOperator(Operator):
    """One pipeline stage: ``run_stage`` does the work; failures stop the graph cleanly.

    Subclasses declare ``inputs``/``outputs`` port names and implement :meth:`run_stage`,
    which receives one value per input port and returns one value per output port.
    """

    stage: str = "stage"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def __init__(self, fragment: Any, *args: Any, study: StudyRun, **kwargs: Any) -> None:
        self.study = study
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        for name in self.inputs:
            spec.input(name)
        for name in self.outputs:
            spec.output(name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        received = [op_input.receive(name) for name in self.inputs]
        if self.study.error is not None:
            return
        started = time.perf_counter()
        try:
            self.study.check_cancelled()
            self.study.progress(self.stage, 0.0)
            produced = self.run_stage(*received)
        except BaseException as exc:  # handed back to the caller by StudyPipeline
            self.study.error = exc
            return
        finally:
            with self.study.lock:
                self.study.timings[self.stage] = (
                    self.study.timings.get(self.stage, 0.0) + time.perf_counter() - started
                )
        values = produced if isinstance(produced, tuple) else (produced,)
        for name, value in zip(self.outputs, values, strict=True):
            op_output.emit(value, name)

    @abstractmethod
    def run_stage(self, *received: Any) -> Any:
        """Do this stage's work on the received values; return the values to emit."""
