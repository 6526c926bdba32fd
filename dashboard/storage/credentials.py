"""Load S3 keys from a JSON file, the environment or an AWS profile, without ever leaking them.

The secret key lives only inside a :class:`Credentials` object and the boto3 clients built
from it. It is never put in ``os.environ``, a log line, a repr or an exception message.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EchoError
from .paths import UnusablePath, local_path

log = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 64 * 1024  # a key file is a few lines of JSON


class CredentialsError(EchoError):
    """Keys could not be loaded; the message says why and never contains a key."""


def mask(value: str | None) -> str:
    """Show at most the first four characters of a key, e.g. ``'AKIA…'``."""
    if not value:
        return "…"
    return value[:4] + "…" if len(value) > 8 else "…"


@dataclass(frozen=True, eq=False)
class Credentials:
    """S3 credentials for one session.

    Exactly one of (``access_key`` + ``secret_key``), ``profile``, ``anonymous`` or
    neither (boto3's default chain) is used. ``repr`` and ``str`` never show the keys.
    """

    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    endpoint: str | None = None
    source: str = "default"
    anonymous: bool = False

    def __repr__(self) -> str:
        parts = [f"source={self.source!r}"]
        if self.access_key:
            parts.append(f"access_key={mask(self.access_key)!r}")
        if self.profile:
            parts.append(f"profile={self.profile!r}")
        if self.endpoint:
            parts.append(f"endpoint={self.endpoint!r}")
        if self.anonymous:
            parts.append("anonymous=True")
        return f"Credentials({', '.join(parts)})"

    __str__ = __repr__

    def __reduce__(self):
        # Dask ships credentials to workers by pickling; keep that possible but explicit.
        return (
            Credentials,
            (
                self.access_key,
                self.secret_key,
                self.session_token,
                self.profile,
                self.endpoint,
                self.source,
                self.anonymous,
            ),
        )

    def secrets(self) -> tuple[str, ...]:
        """The sensitive strings, for scrubbing text before it is shown or logged."""
        return tuple(s for s in (self.access_key, self.secret_key, self.session_token) if s)

    def scrub(self, text: str) -> str:
        """Replace every key in ``text`` with ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def boto3_session(self):
        """An explicit :class:`boto3.Session` holding these keys (never ``os.environ``)."""
        import boto3

        if self.access_key:
            return boto3.Session(
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                aws_session_token=self.session_token,
            )
        if self.profile:
            try:
                return boto3.Session(profile_name=self.profile)
            except Exception as exc:  # botocore.exceptions.ProfileNotFound and friends
                raise CredentialsError(f"AWS profile {self.profile!r} not found: {exc}") from None
        return boto3.Session()


def from_json_file(path: str | os.PathLike) -> Credentials:
    """Read ``{"access_key": ..., "secret_key": ...}`` (optional ``"endpoint"``) from ``path``.

    Only a regular file of at most :data:`MAX_KEY_FILE_BYTES` is read: a path typed in a hosted
    dashboard may name ``/dev/zero`` or a FIFO, which would never end.
    """
    try:
        path = local_path(path, what="credentials file path")
    except UnusablePath as exc:
        raise CredentialsError(str(exc)) from None
    try:
        # stat before open: opening a FIFO would block until someone writes to it
        if not stat.S_ISREG(path.stat().st_mode):
            if path.is_dir():
                raise IsADirectoryError
            raise CredentialsError(f"Credentials path is not a regular file: {path}")
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise CredentialsError(f"Credentials file not found: {path}") from None
    except IsADirectoryError:
        raise CredentialsError(f"Credentials path is a folder, not a file: {path}") from None
    except PermissionError:
        raise CredentialsError(f"Credentials file is not readable (permission denied): {path}") from None
    except OSError as exc:
        raise CredentialsError(f"Credentials file cannot be read ({exc.strerror or 'error'}): "
                               f"{path}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise CredentialsError(f"Credentials file is larger than {MAX_KEY_FILE_BYTES // 1024} KiB;"
                               f" a key file is a few lines of JSON: {path}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"Credentials file is not a UTF-8 text file: {path}") from None
    _warn_if_shared(path)
    return from_json_text(text, origin=str(path))


def from_json_text(text: str, *, origin: str = "pasted keys") -> Credentials:
    """Parse the JSON key format from a string (e.g. pasted or uploaded in the dashboard)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        # The parser's message can quote the content, which may contain the secret: keep it out.
        raise CredentialsError(
            f"Credentials in {origin} are not valid JSON; expected "
            '{"access_key": "...", "secret_key": "..."}'
        ) from None
    if not isinstance(data, dict):
        raise CredentialsError(
            f"Credentials in {origin} must be a JSON object with access_key and secret_key."
        )
    keys = {}
    for name in ("access_key", "secret_key"):
        value = data.get(name)
        if value is None:
            raise CredentialsError(f"Credentials in {origin} are missing {name!r}.")
        if not isinstance(value, str):
            raise CredentialsError(
                f"Credentials in {origin}: {name!r} must be a string, not {type(value).__name__}."
            )
        if not value.strip():
            raise CredentialsError(f"Credentials in {origin}: {name!r} is empty.")
        keys[name] = value.strip()
    endpoint = data.get("endpoint")
    if endpoint is not None and (not isinstance(endpoint, str) or not endpoint.strip()):
        raise CredentialsError(f"Credentials in {origin}: 'endpoint' must be a non-empty string.")
    token = data.get("session_token")
    if token is not None and not isinstance(token, str):
        raise CredentialsError(f"Credentials in {origin}: 'session_token' must be a string.")
    return Credentials(
        access_key=keys["access_key"],
        secret_key=keys["secret_key"],
        session_token=token or None,
        endpoint=endpoint.strip().rstrip("/") if endpoint else None,
        source=origin,
    )


def load_credentials(
    path: str | os.PathLike | None = None,
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Find keys in the usual order.

    1. ``path`` (a JSON key file), else ``$ECHO_S3_CREDENTIALS``;
    2. ``$AWS_ACCESS_KEY_ID`` / ``$AWS_SECRET_ACCESS_KEY`` (and ``$AWS_SESSION_TOKEN``);
    3. ``profile``, else ``$AWS_PROFILE``;
    4. boto3's default chain (``~/.aws/credentials`` default profile, instance roles...).
    """
    env = os.environ if env is None else env
    path = path or env.get("ECHO_S3_CREDENTIALS") or None
    if path:
        return from_json_file(path)
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if access or secret:
        if not (access and secret):
            missing = "AWS_SECRET_ACCESS_KEY" if access else "AWS_ACCESS_KEY_ID"
            raise CredentialsError(f"{missing} is not set (both AWS key variables are needed).")
        return Credentials(
            access_key=access,
            secret_key=secret,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            source="environment",
        )
    profile = profile or env.get("AWS_PROFILE") or None
    if profile:
        return Credentials(profile=profile, source=f"AWS profile {profile!r}")
    return Credentials(source="default AWS chain")


def _warn_if_shared(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "Credentials file %s is readable by other users; restrict it with: chmod 600 %s",
            path,
            path,
        )
