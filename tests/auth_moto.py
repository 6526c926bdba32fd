"""A moto S3 server that really checks keys: IAM users, each in its own account, with its buckets.

Use it where a test needs wrong keys to be rejected (403) or two users who see different
buckets::

    from auth_moto import auth_moto_server

    with auth_moto_server({"alice": ["alice-data"], "bob": ["bob-data"]}) as server:
        alice = server.s3("alice")                  # an S3 as production builds it
        alice.list_buckets()                        # ["alice-data"]
        server.credentials("bob")                   # dashboard Credentials with bob's keys
        server.endpoint                             # "http://127.0.0.1:PORT"

What moto 5.2.5 does (read in ``moto/core/authorization.py``, ``moto/core/responses.py``,
``moto/iam/models.py``, ``moto/s3/models.py``; each point is exercised by
``tests/test_storage_s3.py``):

* **Auth is process-global.** A request is signature-checked and policy-checked only once
  ``ActionAuthenticatorMixin.request_count`` has reached ``settings.INITIAL_NO_AUTH_ACTION_COUNT``
  (default: infinity, i.e. never). ``POST /moto-api/reset-auth`` with a number sets that
  threshold for the whole process and restarts the count. Turning auth on in the test run's
  shared in-process server would break every other test (its keys are not IAM keys), so this
  helper runs its own ``python -m moto.server`` in a **subprocess**, sets everything up while
  auth is still off, then posts ``0``.
* **Accounts come from the access key.** ``get_current_account`` takes, in order:
  ``$MOTO_ACCOUNT_ID`` (never set here, it would pin everything to one account), an
  ``x-moto-account-id`` request header, then the account of the IAM user owning the access
  key (``moto.iam.models.get_account_id_from``), else ``123456789012``. So each user is created
  (IAM calls carrying ``x-moto-account-id``) in an account of its own, and every later request
  signed with that user's key lands in that account automatically.
* **Buckets per account.** ``ListBuckets`` shows only the caller's account's buckets. Bucket
  *names* are global (``s3_backends.bucket_accounts``), and by default moto lets any account
  read another's bucket by name; the server is started with
  ``MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS=false`` so that such access is ``403 AccessDenied``, as
  on Ceph RGW where a user's buckets are private to that user.
* **Policies.** moto evaluates identity (IAM user) policies, not bucket policies. Each user gets
  an inline policy allowing ``s3:*`` on ``*``; the account boundary does the separating.
* **Keys.** With auth on, an unknown access key gives ``InvalidAccessKeyId`` and a known key with
  the wrong secret ``SignatureDoesNotMatch``; both 403.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import boto3
from botocore.config import Config

from dashboard.demo.server import free_port
from dashboard.storage.credentials import Credentials
from dashboard.storage.s3 import S3

ALLOW_ALL_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
# Any keys do while auth is off; these never work once it is on.
_SETUP_KEYS = {"aws_access_key_id": "AKIAAUTHMOTOSETUP000", "aws_secret_access_key": "setup"}


@dataclass(frozen=True)
class AuthUser:
    """One IAM user of the server: its account, keys and buckets."""

    name: str
    account_id: str
    credentials: Credentials = field(repr=False)
    buckets: tuple[str, ...] = ()


@dataclass
class AuthMotoServer:
    """A running auth-enforcing moto server (see the module docstring)."""

    endpoint: str
    users: dict[str, AuthUser]
    process: subprocess.Popen = field(repr=False)

    def credentials(self, user: str) -> Credentials:
        return self.users[user].credentials

    def s3(self, user: str, **kwargs) -> S3:
        """An :class:`S3` for ``user``, built exactly as production builds it."""
        return S3(self.endpoint, self.users[user].credentials, **kwargs)

    def set_auth(self, initial_no_auth_action_count: float) -> float:
        """Post ``/moto-api/reset-auth`` (0 = check every request); return the previous value."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=str(initial_no_auth_action_count).encode(),
            headers={"Content-Type": "text/plain"},  # a form type would hide the body from moto
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return float(json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


def _wait_until_up(endpoint: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OSError(f"moto server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)  # polling a condition (the port answering), not a fixed wait
    raise TimeoutError(f"moto server at {endpoint} did not start within {timeout:.0f} s")


def _start_process() -> tuple[str, subprocess.Popen]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MOTO_", "INITIAL_NO_AUTH"))}
    env["MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS"] = "false"
    for _attempt in range(5):
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until_up(endpoint, process)
        except OSError:  # the port was taken meanwhile: try another one
            _stop(process)
            continue
        except BaseException:
            _stop(process)
            raise
        return endpoint, process
    raise OSError("could not start a moto server subprocess")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _iam_client(endpoint: str, account_id: str):
    client = boto3.Session(**_SETUP_KEYS).client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )

    def add_account_header(request, **_kwargs):
        request.headers["x-moto-account-id"] = account_id

    client.meta.events.register("before-sign.iam.*", add_account_header)
    return client


def _create_user(endpoint: str, name: str, account_id: str) -> Credentials:
    iam = _iam_client(endpoint, account_id)
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="s3-all",
                        PolicyDocument=json.dumps(ALLOW_ALL_S3))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"],
                       source=f"moto IAM user {name!r}")


@contextlib.contextmanager
def auth_moto_server(
    users: Mapping[str, Iterable[str]] | Iterable[str] = ("user",),
) -> Iterator[AuthMotoServer]:
    """Start a moto server in a subprocess with IAM users, then enforce authentication.

    Parameters
    ----------
    users : mapping of user name to bucket names, or iterable of user names
        Each user gets its own account (``000000000001``, ``000000000002``, ...), an access
        key, a policy allowing all of S3, and the listed (empty) buckets, created with its own
        keys. Bucket names are global: give every user distinct ones.

    Yields
    ------
    AuthMotoServer
        ``.endpoint``, ``.users``, ``.credentials(name)``, ``.s3(name)``.
    """
    wanted = dict(users) if isinstance(users, Mapping) else {u: () for u in users}
    endpoint, process = _start_process()
    try:
        made: dict[str, AuthUser] = {}
        for index, (name, buckets) in enumerate(wanted.items(), start=1):
            account_id = f"{index:012d}"
            credentials = _create_user(endpoint, name, account_id)
            client = S3(endpoint, credentials).client
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
            made[name] = AuthUser(name, account_id, credentials, tuple(buckets))
        server = AuthMotoServer(endpoint=endpoint, users=made, process=process)
        server.set_auth(0)
        yield server
    finally:
        _stop(process)
