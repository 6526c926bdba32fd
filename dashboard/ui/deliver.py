"""Stream an offered download to the browser: ``GET <prefix>/echo-download/<token>``.

The page asks for the address a session put in ``BrowserState.delivery``
(:mod:`dashboard.state.deliveries`); this handler checks the login (the same cookie as the
page's), takes the offer (once, for that user only) and streams it: every chunk is read off the
event loop, written, and flushed before the next is read, so the server holds about one chunk
per download whatever its size. A failure before the first byte is a plain-text error
response; after it, the connection is cut, so the browser reports the download as failed
instead of saving a truncated file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote

from bokeh.server.views.auth_request_handler import AuthRequestHandler
from tornado.iostream import StreamClosedError
from tornado.web import HTTPError

from ..errors import EchoError
from ..state.deliveries import ROUTE, Deliveries
from ..storage.stream import StreamStopped

log = logging.getLogger(__name__)

PROGRESS_S = 0.1


def delivery_route(deliveries: Deliveries) -> tuple:
    """The ``extra_patterns`` entry of Panel's server for ``deliveries``."""
    return (rf"/{ROUTE}/([A-Za-z0-9_-]{{20,64}})", DeliveryHandler, {"deliveries": deliveries})


class DeliveryHandler(AuthRequestHandler):
    """One offered download, streamed."""

    def initialize(self, deliveries: Deliveries) -> None:
        self.deliveries = deliveries

    def _user(self) -> str | None:
        provider = self.application.auth_provider
        if provider.get_user is None and provider.get_user_async is None:
            return None  # no login on this server
        user = self.current_user
        if not user:
            raise HTTPError(403)
        return user.decode("utf-8") if isinstance(user, bytes) else str(user)

    async def get(self, token: str) -> None:
        delivery = self.deliveries.take(token, self._user())
        if delivery is None:
            raise HTTPError(404)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        loop = asyncio.get_running_loop()
        try:
            size, chunks = await loop.run_in_executor(None, delivery.open)
        except EchoError as exc:
            _finish(delivery, str(exc))
            self.set_status(502)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(str(exc))
            return
        self.set_header("Content-Type", delivery.media_type)
        self.set_header("Content-Disposition",
                        f"attachment; filename*=UTF-8''{quote(delivery.name, safe='')}")
        if size is not None:
            self.set_header("Content-Length", str(size))
        sent, shown, problem = 0, time.monotonic(), None
        try:
            while (chunk := await loop.run_in_executor(None, next, chunks, None)) is not None:
                self.write(chunk)
                await self.flush()
                sent += len(chunk)
                if delivery.progress is not None and time.monotonic() - shown >= PROGRESS_S:
                    shown = time.monotonic()
                    delivery.progress(sent)
        except StreamClosedError:
            problem = "the browser stopped it."
        except (StreamStopped, EchoError) as exc:
            problem = str(exc)
        except Exception:  # the user gets one sentence, the log the details
            log.exception("Streaming %s to the browser failed", delivery.name)
            problem = "unexpected error (details are in the server log)."
        finally:
            await loop.run_in_executor(None, chunks.close)
        if delivery.progress is not None:
            delivery.progress(sent)
        _finish(delivery, problem)
        if problem is None:
            self.finish()
        else:  # cut: the browser must not keep a part as if it were whole
            self._auto_finish = False
            self.request.connection.close()


def _finish(delivery, problem: str | None) -> None:
    if delivery.finished is not None:
        try:
            delivery.finished(problem)
        except Exception:  # a broken status line must not break the server
            log.exception("Reporting the end of a browser download failed")
