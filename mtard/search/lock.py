"""One experiment, one driver: the lock a search holds on its experiment for its whole life.

Two drivers on one experiment (two searches with the same --name, or a --resume beside a
running search) would both ask Optuna for trials and both append records: more trials than
planned, trials recorded twice, two different fronts. `hold_experiment` refuses the second one.

* Local (or shared-file-system) storage: `<experiment>/driver.lock`, locked with `flock`. The
  kernel releases the lock when its holder dies however it dies (SIGKILL, a lost machine's NFS
  lease), so a stale lock never blocks a resume. The file names its holder (host, PID, start
  time) for the refusal message; a name still there when the lock is free was left by a driver
  that died, and taking it over says so.
* URI storage (s3://, gs://): object stores have no locks. The driver holds the local lock on
  its cache folder (one driver per machine) and a lease object `<experiment>/driver.lease`
  naming it, rewritten every `HEARTBEAT_S`; a lease not renewed for `STALE_AFTER_S` is stale and
  taken over. The limit: reading and writing an object are two steps, so two drivers started on
  different machines within the same second or two can both take a free lease (each notices at
  its next heartbeat and warns), and the staleness test trusts the machines' clocks to agree
  within a minute.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO

from mtard import storage
from mtard.errors import MtardError
from mtard.search.files import ExperimentFiles

LOCK = "driver.lock"
LEASE = "driver.lease"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0


def this_holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds"), "heartbeat": time.time()}


def describe(holder: dict) -> str:
    return f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, started {holder.get('started', '?')}"


def _parse(text: str | None) -> dict | None:
    return storage.parse_json_object(text or "")


def _refusal(files: ExperimentFiles, holder: dict | None) -> MtardError:
    who = f" ({describe(holder)})" if holder else ""
    return MtardError(
        f"{files.uri} is in use by another search driver{who}: wait for it to end, or stop it "
        f"(Ctrl-C) and continue with `mtard search --resume {files.uri}`"
    )


def _lock_file(files: ExperimentFiles, me: dict) -> tuple[IO[str], dict | None]:
    """The experiment's lock file, flock'ed by this process; and the holder a dead driver left in it."""
    handle = open(files.local / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _parse(handle.read())
        handle.close()
        raise _refusal(files, holder) from None
    handle.seek(0)
    left = _parse(handle.read())
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(me) + "\n")
    handle.flush()
    os.fsync(handle.fileno())
    return handle, left


class _Lease:
    """The lease object on a URI storage, renewed by a daemon thread."""

    def __init__(self, files: ExperimentFiles, me: dict):
        self.location = storage.join(files.remote or files.uri, LEASE)
        self.files = files
        self.me = me
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="mtard-lease", daemon=True)

    def take(self) -> dict | None:
        """Take the lease; returns a stale holder taken over, refuses a live one."""
        holder = _parse(storage.read_text(self.location))
        if holder and not self._mine(holder) and time.time() - float(holder.get("heartbeat") or 0) < STALE_AFTER_S:
            raise _refusal(self.files, holder)
        self._write()
        self._thread.start()
        return holder if holder and not self._mine(holder) else None

    def _mine(self, holder: dict) -> bool:
        return holder.get("host") == self.me["host"] and holder.get("pid") == self.me["pid"] and holder.get("started") == self.me["started"]

    def _write(self) -> None:
        storage.write_text(self.location, json.dumps({**self.me, "heartbeat": time.time()}) + "\n")

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder = _parse(storage.read_text(self.location))
                if holder and not self._mine(holder):
                    print(f"[search] warning: another driver took the lease of {self.files.uri} ({describe(holder)}); "
                          f"stop one of them", file=sys.stderr, flush=True)
                self._write()
            except Exception as err:  # a storage hiccup: the next heartbeat retries
                print(f"[search] warning: could not renew {self.location}: {err}", file=sys.stderr, flush=True)

    def release(self) -> None:
        self._stop.set()
        try:
            storage.delete(self.location)
        except Exception:
            pass  # left behind, it goes stale after STALE_AFTER_S


@contextmanager
def hold_experiment(files: ExperimentFiles) -> Iterator[None]:
    """Hold the experiment for the body's duration: refuse if another live driver holds it,
    take over (and say so) a lock whose driver is gone."""
    me = this_holder()
    files.local.mkdir(parents=True, exist_ok=True)
    handle, left = _lock_file(files, me)
    lease = None
    try:
        if files.remote is not None:
            lease = _Lease(files, me)
            left = lease.take() or left
        if left:
            print(f"[search] took over the lock of {files.uri} from a driver that is gone ({describe(left)})", file=sys.stderr, flush=True)
        yield
    finally:
        if lease is not None:
            lease.release()
        handle.seek(0)
        handle.truncate()  # empty: released cleanly (the file stays: unlinking a locked file races)
        handle.close()
