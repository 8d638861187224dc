"""The one way every wait polls: short pauses that grow a little, up to a deadline.

No fixed sleeps: the first retry comes quickly (etcd often answers within a tenth of a
second), later ones settle at `longest` so a long wait costs few requests.
"""

from __future__ import annotations

import time


class Backoff:
    def __init__(self, timeout: float, *, first: float = 0.1, longest: float = 0.25) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.delay = first
        self.longest = longest

    def pause(self) -> bool:
        """Sleep before the next try; False, without sleeping, once that would pass the
        deadline (the caller gives up)."""
        if time.monotonic() + self.delay > self.deadline:
            return False
        time.sleep(self.delay)
        self.delay = min(self.delay * 1.5, self.longest)
        return True
