"""End to end in Chromium: Inspect shows a dataset's value (with units), plots the rotation
angles and tables a compound dataset, all as text whatever the data says."""

from __future__ import annotations

import uuid

import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import click, connect, shot, status, tab, tick
from test_browser_dashboard import _keys, choose, expect

from dashboard.storage.s3 import S3

pytestmark = pytest.mark.browser


def test_values_in_inspect(page, moto_server, credentials, testdata):
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"values-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=bucket)
    for name in ("aps_tooth_dataexchange.h5", "compound.h5"):
        s3.client.upload_file(str(testdata / name), bucket, name)
    connect(page, endpoint=moto_server.endpoint, credentials=_keys())
    choose(page, "Bucket", bucket)
    click(page, "List Objects")
    tick(page, "aps_tooth_dataexchange.h5")
    tab(page, "Inspect")
    choose(page, "Value of", "/exchange/theta")
    head = status(page, "echo-value-head")
    expect(head).to_have_text("/exchange/theta: float64, shape 181, units degrees")
    expect(status(page, "echo-value-text")).to_contain_text("(min 0, max 179.006)")
    expect(page.locator(".echo-value-plot canvas").first).to_be_visible()
    shot(page, "60-inspect-values")
    choose(page, "Value of", "/measurement/sample/name")
    expect(status(page, "echo-value-text")).to_have_text("Tooth")
    expect(page.locator(".echo-value-plot")).to_have_count(0)

    tab(page, "Browse")
    tick(page, "aps_tooth_dataexchange.h5", selected=0, on=False)
    tick(page, "compound.h5")
    tab(page, "Inspect")
    choose(page, "Value of", "/dset")
    table = page.locator(".echo-value-table")
    expect(table).to_contain_text("pressure")
    expect(table).to_contain_text("SE 10")
    assert "Traceback" not in page.content()
