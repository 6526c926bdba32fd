"""Two logged-in users in Chromium: Bob keeps stepping frames while Alice opens hostile files.

Alice (her own page, her own login) loads, one after the other, a 447-byte file claiming 8 GB
of frames, a decompression bomb, a stack of 4096 chunks per frame and a dataset whose pixels
live in ``/proc/self/environ``; each gets its sentence. Meanwhile Bob presses Next and every
press shows the right frame. Bob's latency (press to label) and the server's RSS are reported,
not bounded; after Alice's page closes, the server's RSS returns to within 20 % of its start.
The same cases over websocket clients, with descriptors and threads counted, are in
``test_session_release.py``.
"""

from __future__ import annotations

import statistics
import time

import h5py
import hostile_files
import psutil
import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import click, shot, status, tab
from served_sessions import until
from test_browser_areas import _serve, _stack, list_bucket, login, untick
from test_browser_dashboard import expect, tick

from dashboard.storage.s3 import S3

pytestmark = pytest.mark.slow

SENTENCE = "is larger than this server displays; use the CLI on a machine with enough memory"
HOSTILE = {"claim.h5": SENTENCE, "bomb.h5": SENTENCE,
           "chunks.h5": "(more than 1024)", "environ.h5": "outside the object"}
NORMAL = "normal.h5"  # 23 frames


class World:
    """The users file and one bucket both users read: a normal stack and the hostile files."""

    def __init__(self, root, s3: S3):
        import json

        from test_browser_areas import PASSWORDS

        self.root, self.home = root, root / "home"
        self.home.mkdir()
        self.users = root / "users.json"
        self.users.write_text(json.dumps(PASSWORDS))
        self.srv = root / "srv"
        self.bucket = "shared-bystander"
        s3.client.create_bucket(Bucket=self.bucket)
        s3.client.upload_file(str(_stack(root / NORMAL, 5)), self.bucket, NORMAL)
        environ = root / "environ.h5"
        with h5py.File(environ, "w") as f:
            f.create_dataset("data", shape=(1, 8, 8), dtype="u1",
                             external=[("/proc/self/environ", 0, 64)])
        files = {"environ.h5": environ, "claim.h5": hostile_files.claim(root / "claim.h5"),
                 "bomb.h5": hostile_files.bomb(root / "bomb.h5"),
                 "chunks.h5": hostile_files.many_chunks(root / "chunks.h5")}
        for key, path in files.items():
            s3.client.upload_file(str(path), self.bucket, key)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20  # the server runs in this process


def frame_label(page):
    return status(page, "echo-frame-label")


def test_a_bystander_keeps_stepping_while_another_user_opens_hostile_files(
        browser, moto_server, credentials, tmp_path):
    world = World(tmp_path, S3(moto_server.endpoint, credentials))
    with _serve(world, moto_server, user_root=str(world.srv / "{user}")) as server:
        bob = login(browser, server, "bob")
        list_bucket(bob, world.bucket)
        tick(bob, NORMAL)
        tab(bob, "Frames")
        click(bob, "Load Selected H5 File")
        expect(frame_label(bob)).to_have_text("Frame 0 of 22")
        alice = login(browser, server, "alice")
        list_bucket(alice, world.bucket)
        tab(alice, "Frames")
        rss_start = rss_mb()
        latencies, outcomes, shown = [], {}, 0

        def bob_steps(n: int) -> None:
            nonlocal shown
            for _ in range(n):
                shown += 1
                t0 = time.perf_counter()
                click(bob, "Next")
                expect(frame_label(bob)).to_have_text(f"Frame {shown} of 22")
                latencies.append(time.perf_counter() - t0)

        ticked = None
        for key, wanted in HOSTILE.items():
            tab(alice, "Browse")
            if ticked is not None:
                untick(alice, ticked, selected=0)
            tick(alice, key)
            ticked = key
            tab(alice, "Frames")
            t0 = time.perf_counter()
            click(alice, "Load Selected H5 File")
            bob_steps(3)  # while Alice's file opens on the same server
            expect(status(alice, "echo-viewer-status")).to_contain_text(wanted)
            outcomes[key] = (round(time.perf_counter() - t0, 1), round(rss_mb()))
            assert "Traceback" not in status(alice, "echo-viewer-status").inner_text()
        shot(alice, "bystander-01-alice-refused")
        shot(bob, "bystander-02-bob-stepping")
        alice.context.close()
        until(lambda: rss_mb() < 1.2 * rss_start, timeout=60,
              what=f"server RSS back within 20 % of {rss_start:.0f} MB")
        rss_end = rss_mb()
        bob_steps(2)  # and Bob's page is still alive
        bob.context.close()
    assert len(latencies) == 3 * len(HOSTILE) + 2
    print(f"\nbystander in Chromium: {len(latencies)} steps, press to label p50 "
          f"{1000 * statistics.median(latencies):.0f} ms, max {1000 * max(latencies):.0f} ms; "
          f"server RSS MB: start {rss_start:.0f}, after Alice closed {rss_end:.0f}; "
          f"Alice's opens (s, RSS MB): {outcomes}")
