"""Exit codes that tell the truth about signals: a run ended by SIGTERM exits 143 and by Ctrl+C 130 (128 + the
signal's number), whatever moment the signal found it in.

Lightning turns SIGTERM during ``fit`` into a graceful stop that ends in ``SystemExit`` with code 0, so a scheduler,
``wandb agent`` or a shell's ``&&`` would take a stopped run for a finished one. :class:`SignalRecorder` notes which
signal arrived. During ``fit`` Lightning calls it as the handler it found installed (its own runs first, then the
previous one), and it only notes the signal there, leaving the stop to Lightning; outside ``fit`` (data set-up, W&B,
the instability analysis) it is the handler, and ends the run at once with ``SystemExit(128 + n)``.
"""

from __future__ import annotations

import signal
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT)


class SignalRecorder:
    """Install with :meth:`install`; :attr:`received` is the first handled signal's number, or None."""

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> SignalRecorder:
        for signum in HANDLED:
            signal.signal(signum, self._handle)
        return self

    @property
    def exit_code(self) -> int | None:
        return None if self.received is None else 128 + self.received

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # Python's own behaviour; Lightning catches it and stops
        if signal.getsignal(signum) == self._handle:  # not inside Lightning's fit: nobody else will stop the run
            raise SystemExit(128 + signum)
