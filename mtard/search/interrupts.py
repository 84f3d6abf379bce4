"""Ctrl-C and SIGTERM during a search: an interruption that keeps every finished result.

SIGINT (Ctrl-C) and SIGTERM (what a preempted node or `ray job stop` sends) take one path. Inside
Tune's loop the first signal asks Tune to stop the trials and save its state (Tune's own stop,
through the SIGUSR1 handler it installs while its loop runs): every finished result is kept and
the trials that were running continue on --resume. Outside the loop it raises KeyboardInterrupt.
Either way the search ends with `mtard.errors.Interrupted` (exit 128 + signal: 130 / 143) saying
how to continue. A second signal quits at once. `mtard.search.run` disables Tune's own SIGINT
handler (TUNE_DISABLE_SIGINT_HANDLER) and re-installs these handlers after `ray.init`, which sets
its own SIGTERM handler.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager

from mtard.errors import Interrupted


class SearchInterrupts:
    """The signal state of one search: which signal came, whether Tune's loop runs, the experiment to resume."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_tune = False
        self.experiment: str | None = None  # set once the experiment exists with a state to resume

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        self.install()
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def install(self) -> None:
        """(Again after ray.init, which sets its own SIGTERM handler.)"""
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            print(f"[search] {signal.Signals(signum).name} again: quitting at once", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        if self.in_tune:
            print(f"[search] {signal.Signals(signum).name}: stopping the trials and saving the search's state "
                  f"(press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
            threading.Thread(target=self._stop_tune, name="mtard-stop-tune", daemon=True).start()
        else:
            raise KeyboardInterrupt

    def _stop_tune(self) -> None:
        """Ask Tune to stop through the SIGUSR1 handler it installs when its loop starts; if the signal
        came while Tune was still setting up, wait for that handler (SIGUSR1's default would kill us)."""
        while self.in_tune:
            if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.05)

    def interrupted(self) -> Interrupted:
        experiment = self.experiment
        how = f"continue with mtard search --resume {shlex.quote(experiment)}" if experiment else "nothing had started: start the search again"
        return Interrupted(self.signum or signal.SIGINT, f"interrupted: {how}")
