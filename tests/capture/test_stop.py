"""A stop request reaches the drain loop at once, whatever capture.poll_timeout_ms is."""

from __future__ import annotations

import select
import threading
import time

from capture.recorder import Stop


def test_a_stop_request_wakes_a_poll_on_its_fd_at_once() -> None:
    stop = Stop()
    poller = select.epoll()
    poller.register(stop.wake_fd, select.EPOLLIN)
    assert poller.poll(0) == []  # nothing asked yet: the loop keeps waiting on the rings
    threading.Timer(0.05, stop.request, args=("SIGINT",)).start()
    t0 = time.monotonic()
    woke = poller.poll(10.0)
    assert woke and time.monotonic() - t0 < 1.0
    assert stop.is_set() and stop.reason == "SIGINT" and not stop.complete
    poller.close()
