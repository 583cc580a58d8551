"""A limit on failed tries per client address (web logins, export passwords):
at most ``limit`` tries a :data:`WINDOW` per address, a success forgiven."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 60.0                   # seconds a try is counted
MAX_TRACKED = 10_000            # client addresses whose tries are counted


class Attempts:
    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self.tries: dict[str, deque[float]] = {}

    def allow(self, addr: str) -> float:
        """0 if ``addr`` may try now (the try is counted), else the seconds to wait."""
        now = self.clock()
        q = self.tries.get(addr)
        if q is None:
            if len(self.tries) >= MAX_TRACKED:
                for a in [a for a, d in self.tries.items() if not d or d[-1] < now - WINDOW]:
                    del self.tries[a]
                if len(self.tries) >= MAX_TRACKED:
                    return WINDOW       # under a flood every new address waits
            q = self.tries[addr] = deque()
        while q and q[0] <= now - WINDOW:
            q.popleft()
        if len(q) >= self.limit:
            return max(1.0, q[0] + WINDOW - now)
        q.append(now)           # counted now (so parallel tries count), forgiven if it succeeds
        return 0.0

    def forgive(self, addr: str) -> None:
        q = self.tries.get(addr)
        if q:
            q.pop()
