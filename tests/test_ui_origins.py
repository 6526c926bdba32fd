"""The dashboard server refuses websocket connections from origins it was not told about."""

from __future__ import annotations

import asyncio

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from dashboard.app import RunningServer
from dashboard.config import Settings


def _handshake_status(port: int, origin: str) -> int:
    """HTTP status of a websocket handshake to Bokeh's /ws with the given Origin (101 = open)."""

    async def attempt() -> int:
        request = HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers={"Origin": origin})
        try:
            connection = await websocket_connect(request)
        except HTTPClientError as exc:
            return exc.code
        connection.close()
        return 101

    return asyncio.run(attempt())


@pytest.fixture
def settings(moto_server):
    return Settings(endpoint=moto_server.endpoint)


def test_foreign_origin_is_refused_by_default(settings):
    with RunningServer(settings) as server:
        assert _handshake_status(server.port, "http://evil.example.org") == 403
        # The served address itself is accepted (no 403): the browser tests connect this way.
        assert _handshake_status(server.port, f"http://127.0.0.1:{server.port}") != 403


def test_an_origin_given_on_the_command_line_is_accepted(settings):
    with RunningServer(settings, allow_websocket_origin=["viewer.example.org"]) as server:
        assert _handshake_status(server.port, "http://viewer.example.org") != 403
        assert _handshake_status(server.port, "http://evil.example.org") == 403
