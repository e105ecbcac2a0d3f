"""Batching across requests: images from concurrent requests scored together in one worker thread.

Requests :meth:`Batcher.submit` their prepared images into a bounded queue (a request whose images do not all
fit is refused at once with :class:`QueueFullError`, so memory never grows with the load) and get one
:class:`concurrent.futures.Future` per image. The worker thread takes up to ``batch_size`` images, waiting at
most ``max_wait_ms`` after the first for more, groups them by shape and runs ``process`` on each group; a
group that raises is retried image by image, so only the offending image fails. The model therefore runs
in that one thread, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any

from clipiq.data.runner import process_isolating_failures, shape_key

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The queue has no room for a request's images."""


class Batcher:
    """A bounded queue and one worker thread that runs ``process`` on batches of up to ``batch_size`` items.

    ``process(items) -> outputs`` (one output per item) runs in the worker thread. ``on_batch(n)`` is told the
    size of every batch run (for metrics). Use as a context manager, or :meth:`start` and :meth:`stop`.
    """

    def __init__(self, process: Callable[[list[Any]], Sequence[Any]], *, batch_size: int = 16,
                 max_wait_ms: float = 5.0, queue_size: int = 64, batch_key: Callable[[Any], Hashable] = shape_key,
                 on_batch: Callable[[int], None] | None = None, name: str = "clipiq-batcher"):
        if batch_size < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError(f"batch_size and queue_size must be at least 1 and max_wait_ms >= 0, got "
                             f"{batch_size}, {queue_size}, {max_wait_ms}")
        self.process = process
        self.batch_size = batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.batch_key = batch_key
        self.on_batch = on_batch
        self.name = name
        self._queue: deque[tuple[Any, Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Batcher:
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the worker; images still queued fail with QueueFullError-free cancellation."""
        with self._cond:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for _, fut in pending:
            fut.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Batcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- requests -----------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Items waiting in the queue (not counting the batch being run)."""
        return len(self._queue)

    def submit(self, items: Sequence[Any]) -> list[Future]:
        """Queue all of ``items`` or none: QueueFullError when they do not all fit (or the batcher is stopped)."""
        futures: list[Future] = [Future() for _ in items]
        with self._cond:
            if self._stopping or self._thread is None:
                raise QueueFullError("the scoring worker is not running")
            if len(self._queue) + len(items) > self.queue_size:
                raise QueueFullError(f"{len(self._queue)} images are waiting (queue size {self.queue_size}); "
                                     f"no room for {len(items)} more")
            self._queue.extend(zip(items, futures))
            self._cond.notify()
        return futures

    # --- the worker ---------------------------------------------------------------------------------

    def _take(self) -> list[tuple[Any, Future]]:
        """Up to batch_size live items: waits for the first, then at most max_wait for the rest."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.batch_size and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = []
            while self._queue and len(batch) < self.batch_size:
                item, fut = self._queue.popleft()
                if fut.set_running_or_notify_cancel():  # a request that gave up (timeout) cancelled its futures
                    batch.append((item, fut))
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                if self._stopping:
                    return
                continue
            groups: dict[Hashable, list[tuple[Any, Future]]] = {}
            for item, fut in batch:
                try:
                    key = self.batch_key(item)
                except Exception:
                    key = id(item)
                groups.setdefault(key, []).append((item, fut))
            for group in groups.values():
                if self.on_batch is not None:
                    try:
                        self.on_batch(len(group))
                    except Exception:  # metrics never break scoring
                        log.exception("on_batch failed")
                self._run(group)

    def _run(self, group: list[tuple[Any, Future]]) -> None:
        settled = process_isolating_failures(self.process, [item for item, _ in group])
        for (_, fut), (out, err) in zip(group, settled):
            if err is None:
                fut.set_result(out)
            else:
                fut.set_exception(err)
