"""Downloads to the user's browser: offered by a session, fetched once by that user's browser.

On a shared server without ``--user-root`` there is no folder on the server for anyone's
downloads: "Download Selected" offers a :class:`Delivery` here instead, and the page fetches it
from ``echo-download/<token>`` (:mod:`dashboard.ui.deliver` streams it). One
:class:`Deliveries` per server; a token is 32 random bytes, works once, for the user who
offered it, within :data:`TTL_S` seconds, and is withdrawn when its session closes.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

TTL_S = 300.0  # an offer not fetched within this time is dropped
ROUTE = "echo-download"  # the page fetches ROUTE/<token>, relative to its own address


@dataclass
class Delivery:
    """One download waiting for the browser.

    Attributes
    ----------
    name : str
        The file name the browser saves.
    media_type : str
        ``application/zip`` or ``application/octet-stream``.
    open : callable
        ``open() -> (size or None, iterator of bytes)``, called (off the event loop) when the
        browser asks; may raise :class:`~dashboard.errors.EchoError` (nothing sent yet).
    user : str or None
        The login that may fetch it (None: any, on a server without a login).
    owner : object
        What offered it (withdrawn with :meth:`Deliveries.withdraw`).
    progress : callable, optional
        ``progress(bytes_sent)`` while it streams (at most every 0.1 s, and at the end).
    finished : callable, optional
        ``finished(problem)``: ``None`` when every byte was sent, else one sentence.
    """

    name: str
    media_type: str
    open: Callable[[], tuple[int | None, Iterator[bytes]]]
    user: str | None = None
    owner: object = None
    progress: Callable[[int], None] | None = None
    finished: Callable[[str | None], None] | None = None
    created: float = field(default_factory=time.monotonic)


class Deliveries:
    """The offers of one server, by token."""

    def __init__(self, ttl_s: float = TTL_S):
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._waiting: dict[str, Delivery] = {}

    def offer(self, delivery: Delivery) -> str:
        """Keep ``delivery`` and return the address the page fetches (``ROUTE/<token>``)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            self._waiting[token] = delivery
        return f"{ROUTE}/{token}"

    def take(self, token: str, user: str | None) -> Delivery | None:
        """The offer of ``token`` for ``user``, removed (one use); None if unknown, expired, or
        offered to another user (then it stays for its own user)."""
        with self._lock:
            self._prune()
            delivery = self._waiting.get(token)
            if delivery is None or (delivery.user is not None and delivery.user != user):
                return None
            return self._waiting.pop(token)

    def withdraw(self, owner: object) -> int:
        """Drop every offer of ``owner`` (its session closed, or it cancelled); how many."""
        with self._lock:
            tokens = [t for t, d in self._waiting.items() if d.owner is owner]
            for token in tokens:
                del self._waiting[token]
        return len(tokens)

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._waiting)

    def _prune(self) -> None:
        now = time.monotonic()
        for token in [t for t, d in self._waiting.items() if now - d.created > self.ttl_s]:
            del self._waiting[token]


NO_ROUTE = ("This server keeps no download folders for its users, and it was not started in a "
            "way that can send files to your browser (use echo-s3-viewer serve).")


def offer_selection(state) -> None:
    """Offer the objects ticked in ``state`` (a :class:`~.browser.BrowserState`) to its user's
    browser: one file as it is, several as one zip; progress and the outcome go to its
    ``download_*`` parameters, the address to :attr:`~.browser.BrowserState.delivery`."""
    from functools import partial

    from ..storage.listing import human_size
    from ..storage.stream import archive_name, browser_stream

    if state.deliveries is None:
        state.param.update(download_status=NO_ROUTE, download_failed=True)
        return
    s3, bucket, keys = state.s3, state.bucket, list(state.selection)
    sizes = {o.key: o.size for o in state.listing}
    total = sum(sizes.get(k, 0) for k in keys)
    name = archive_name(bucket, keys)
    sent = [0]
    post, update = state.tasks.post, state.param.update

    def progress(n: int) -> None:
        sent[0] = n
        post(update, download_progress=min(100, int(100 * n / total)) if total else 0,
             download_status=f"Your browser is saving {name}: {human_size(n)} of "
                             f"{human_size(total)}…")

    def finished(problem: str | None) -> None:
        if problem is None:
            post(update, downloading=False, download_progress=100, download_failed=False,
                 download_status=f"Download finished: your browser saved {name} "
                                 f"({len(keys)} object{'s' if len(keys) != 1 else ''}, "
                                 f"{human_size(sent[0])}).")
        else:
            post(update, downloading=False, download_failed=True,
                 download_status=f"Download to your browser failed: {problem}")

    def message(exc, key):
        return str(s3.translate(exc, bucket=bucket, key=key, action="download"))

    delivery = Delivery(
        name=name, media_type="application/zip" if len(keys) != 1 else "application/octet-stream",
        open=partial(browser_stream, s3, bucket, keys, cancel=state._download_cancel,
                     message=message),
        user=state.user, owner=state, progress=progress, finished=finished)
    state.param.update(
        downloading=True, download_progress=0, download_failed=False,
        download_status=f"Your browser will save {name} ({len(keys)} object"
                        f"{'s' if len(keys) != 1 else ''}, {human_size(total)})…",
        delivery=state.deliveries.offer(delivery))
