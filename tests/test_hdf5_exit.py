"""A process that exits with S3-backed HDF5 files still open must exit cleanly.

HDF5 closes leftover files from a C exit handler after Python has finalised; for files read
through a Python file object (every S3 object) that used to crash the interpreter (SIGSEGV),
e.g. a dashboard server stopping while sessions still held stacks.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT, TESTDATA

SCRIPT = textwrap.dedent("""
    import ctypes
    import sys
    from dashboard import open_stack
    from dashboard.demo.server import MotoS3Server
    from dashboard.storage.credentials import Credentials
    from dashboard.storage.s3 import S3

    server = MotoS3Server().start()
    keys = Credentials(access_key="AKIAEXITTEST", secret_key="exit-test-secret", source="test")
    s3 = S3(server.endpoint, keys)
    s3.client.create_bucket(Bucket="exit-test")
    s3.client.upload_file(sys.argv[1], "exit-test", "scan.h5")
    stack = open_stack("s3://exit-test/scan.h5", s3=s3)   # never closed
    print(stack.frame(len(stack) - 1).shape, flush=True)
    # Outlive finalisation, as objects held by a server's sessions or a cache can.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(stack))
""")


def test_exit_with_open_s3_stacks_is_clean():
    source = TESTDATA / "diamond_k11_diad_imaging.h5"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(source)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "(22, 26)"
