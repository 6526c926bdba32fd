"""End to end in Chromium: the Process step offers an NXtomo file's own flats and darks, says
which it uses, previews them and writes the batch numbered by projection."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import click, open_in_frames, shot, status, tab
from test_browser_dashboard import _keys, choose, expect, field, type_in, wait_frame
from test_flats import nxtomo

from dashboard.storage.s3 import S3

pytestmark = pytest.mark.browser

KEYS = [2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]


def test_flats_and_darks_from_the_image_key(page, moto_server, credentials, tmp_path):
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"tomo-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=bucket)
    nxtomo(tmp_path / "tomo.nxs", keys=KEYS, shape=(96, 128))
    s3.client.upload_file(str(tmp_path / "tomo.nxs"), bucket, "tomo.nxs")

    open_in_frames(page, endpoint=moto_server.endpoint, credentials=_keys(), bucket=bucket,
                   key="tomo.nxs")
    wait_frame(page, 0, len(KEYS) - 1)
    tab(page, "Process")
    # 13 frames are too few for the seed's flat; the file's own fields are offered.
    expect(status(page, "echo-process-check")).to_contain_text("at least 21")
    choose(page, "Flat field", "image_key (4 flat frames)")
    choose(page, "Dark field", "image_key (2 dark frames)")
    type_in(page, "Output folder", str(tmp_path / "out"))
    choose(page, "Format", "NPY")
    expect(status(page, "echo-process-check")).to_contain_text(
        "7 frames will be written as NPY. Flat: image_key (4 flat frames) "
        "(/entry/data/image_key); dark: image_key (2 dark frames) (/entry/data/image_key); "
        "Start and End count projections (7).")
    expect(field(page, "End frame")).to_have_value("6")
    click(page, "Preview Last Frame")
    expect(status(page, "echo-process-status")).to_have_text("Preview of projection 6 ready.")
    expect(status(page, "echo-preview-title")).to_contain_text(
        "Projection 6 (the last of the range), flat: the frames /entry/data/image_key marks; "
        "dark: the frames /entry/data/image_key marks")
    expect(page.locator(".echo-preview-image")).to_have_count(5)
    # The "too few frames" error of the seed's flat is gone, and so is its red.
    line = page.locator(".echo-process-status").first
    expect(line).not_to_have_class(re.compile(r"\becho-error\b"))
    assert line.evaluate("el => getComputedStyle(el).color") != "rgb(176, 0, 32)"
    shot(page, "40-process-flats-from-image-key")
    click(page, "Batch Process & Save")
    expect(status(page, "echo-batch-summary")).to_contain_text("Processed 7 of 7 frames")
    written = sorted(p.name for p in (tmp_path / "out").glob("*.npy"))
    assert written == [f"tomo_{i:06d}.npy" for i in range(7)]
    assert np.load(tmp_path / "out" / "tomo_000006.npy").shape == (96, 128)
    # The flats before and after the scan, interpolated by position instead of averaged.
    choose(page, "Flats before and after the scan", "Interpolated by position")
    expect(status(page, "echo-process-check")).to_contain_text(
        "before and after the scan interpolated by position")
    click(page, "Preview Last Frame")
    expect(status(page, "echo-preview-title")).to_contain_text(
        "before and after the scan, interpolated by position")
    assert "Traceback" not in page.content()
