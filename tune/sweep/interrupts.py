"""SIGINT and SIGTERM in the sweep driver: a graceful stop through Tune, then exit 128 + signal."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)

class SweepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM before the trials started (nothing to resume): exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupts:
    """SIGINT and SIGTERM handlers for the driver's main thread.

    While `tuner.fit()` runs, the first signal is handed to Tune's own graceful stop (its
    SIGUSR1 handler: the same as Ctrl-C, but installed for SIGTERM too), which snapshots the
    experiment and returns; `signum` remembers which signal it was. A second signal, or one
    outside `fit()`, raises `SweepInterrupted`.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._fitting = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def reinstall(self) -> None:
        """Take the signals back: `ray.init` installs a C-level SIGTERM handler in the driver
        (it logs a stack and aborts, exit 134), replacing ours."""
        for sig in self._saved:
            signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def fitting(self):
        # Tune installs its SIGINT handler only where this variable is unset; ours forwards.
        old = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._fitting = True
        self.reinstall()
        try:
            yield
        finally:
            self._fitting = False
            if old is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old

    def _handle(self, signum: int, frame) -> None:
        if self._fitting and self.signum is None:
            tune_stop = signal.getsignal(signal.SIGUSR1)
            if callable(tune_stop):
                self.signum = signum
                log.warning("%s: stopping the sweep gracefully (running trials keep their last "
                            "checkpoint; a second signal stops at once)",
                            signal.Signals(signum).name)
                tune_stop(signal.SIGUSR1, frame)
                return
        self.signum = signum
        raise SweepInterrupted(signum)
