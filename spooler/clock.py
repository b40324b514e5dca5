"""The clocks a daemon turn reads, passed in rather than read inside, so that tests can step
the loop with chosen times (as huey's consumer takes `now`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from spooler.status import utcnow


@dataclass(frozen=True)
class Clocks:
    monotonic: float  # intervals, deadlines, settle times: never jumps
    wall: datetime  # timestamps written into statuses (UTC)
    # The file server's clock (mtimes it stamps): leases, queue aging and the age of files
    # in rejected/ and jobs/ staging. Never compared with this host's wall clock.
    server: float


@dataclass
class ServerClock:
    """The file server's time, estimated between two stamps: the mtime of our last heartbeat
    write plus the monotonic time elapsed since."""

    stamped: float = 0.0
    at_monotonic: float = 0.0

    def stamp(self, server_time: float, monotonic: float) -> None:
        self.stamped, self.at_monotonic = server_time, monotonic

    def now(self, monotonic: float) -> float:
        return self.stamped + max(0.0, monotonic - self.at_monotonic) if self.stamped else 0.0


def read_clocks(server: ServerClock) -> Clocks:
    mono = time.monotonic()
    return Clocks(monotonic=mono, wall=utcnow(), server=server.now(mono))
