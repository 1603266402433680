"""Exit codes that tell the truth about signals: a run ended by SIGTERM exits 143, by Ctrl+C 130 and by a
preemption notice (SIGUSR2) 140 (128 + the signal's number), whatever moment the signal found it in.

Lightning turns SIGTERM during ``fit`` into a graceful stop that ends in ``SystemExit`` with code 0, so a scheduler,
``wandb agent`` or a shell's ``&&`` would take a stopped run for a finished one. :class:`SignalRecorder` notes which
signal arrived. During ``fit`` Lightning calls it as the handler it found installed for SIGTERM (its own runs
first), and it only notes the signal there, leaving the stop to Lightning; outside ``fit`` (data set-up, W&B, the
instability analysis), and for SIGUSR2 always, it is the handler, and ends the run at once with
``SystemExit(128 + n)``: the last epoch-end checkpoint is what the run continues from.

SIGUSR2 is submitit's preemption signal, and what ``#SBATCH --signal=B:USR2@<s>`` sends before a time limit. Unlike
SIGTERM, which SLURM sends to every process of a job, W&B's service survives it, so the run can still be marked
preempting and finished (docs/slurm/agents.sh).
"""

from __future__ import annotations

import signal
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
PREEMPTED = signal.SIGUSR2


class SignalRecorder:
    """Install with :meth:`install`; :attr:`received` is the first handled signal's number, or None."""

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> SignalRecorder:
        for signum in HANDLED:
            signal.signal(signum, self._handle)  # also over an inherited SIG_IGN (lth-sweep's job, an agent script)
        return self

    @property
    def exit_code(self) -> int | None:
        return None if self.received is None else 128 + self.received

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum != signal.SIGINT:
            return  # the run is already ending; a second signal must not cut its clean-up short
        self.received = self.received or signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # Python's own behaviour; Lightning catches it and stops
        if signum == PREEMPTED or signal.getsignal(signum) == self._handle:  # no Lightning stop to wait for
            raise SystemExit(128 + signum)
