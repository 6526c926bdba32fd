"""The one place that talks S3: boto3 clients, listing, error translation.

Clients are configured for Ceph RGW (STFC ECHO): path-style addressing, SigV4, botocore's
standard retry mode, bounded connect and
read timeouts, and checksums only when an operation requires them.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from ..config import DEFAULT_MAX_OBJECTS, resolve_endpoint
from ..errors import EchoError
from ..text import shorten
from .credentials import Credentials, load_credentials
from .redact import install_log_redaction

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".hdf")


class StorageError(EchoError):
    """An S3 request failed; the message names the endpoint/bucket/key, never a key."""


class AccessDenied(StorageError):
    """403: the keys are wrong or lack permission."""


class NotFound(StorageError):
    """404: the bucket or object does not exist."""


class EndpointUnreachable(StorageError):
    """The endpoint could not be reached (DNS, refused connection, timeout after retries)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing."""

    key: str
    size: int
    last_modified: datetime
    etag: str

    @property
    def name(self) -> str:
        """The last path segment of the key."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def is_hdf5(self) -> bool:
        return self.key.lower().endswith(HDF5_SUFFIXES)

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "size": self.size,
            "last_modified": self.last_modified.isoformat(),
            "etag": self.etag,
        }


@dataclass(frozen=True)
class Listing:
    """Objects under a prefix, and whether the limit cut the listing short."""

    objects: list[ObjectInfo]
    truncated: bool
    limit: int

    @property
    def notice(self) -> str:
        """``"first 5000 objects shown; more exist"`` when truncated, else ``""``."""
        return f"first {self.limit} objects shown; more exist" if self.truncated else ""


def is_s3_url(value) -> bool:
    """Whether ``value`` is an ``s3://`` address (else a local path)."""
    return isinstance(value, str) and value.startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key/path`` into ``("bucket", "key/path")``: the one parser of
    ``s3://`` addresses (a key keeps any ``?`` or ``#``: S3 keys may contain them)."""
    bucket, _, key = url[len("s3://"):].partition("/") if is_s3_url(url) else ("", "", "")
    if not bucket:
        raise StorageError(f"Not an S3 URL (expected s3://BUCKET/KEY): {url!r}")
    return bucket, key.lstrip("/")


class S3:
    """A connection to one S3 endpoint with one set of credentials (one per browser session).

    Parameters
    ----------
    endpoint : str, optional
        Endpoint URL; defaults to the credentials' ``endpoint`` or ECHO.
    credentials : Credentials, optional
        Defaults to :func:`load_credentials`'s usual lookup.
    connect_timeout, read_timeout : float
        Seconds, per attempt.
    max_attempts : int
        Total attempts per request (botocore standard retry mode).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        credentials: Credentials | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 4,
    ):
        self.credentials = credentials if credentials is not None else load_credentials()
        self.endpoint = resolve_endpoint(endpoint, self.credentials)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        install_log_redaction()  # keys out of botocore/s3fs/urllib3 DEBUG logs

    def __repr__(self) -> str:
        return f"S3(endpoint={self.endpoint!r}, credentials={self.credentials!r})"

    # -- configuration ------------------------------------------------------------------

    def _config_kwargs(self) -> dict:
        return {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "retries": {"mode": "standard", "total_max_attempts": self.max_attempts},
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "max_pool_connections": 32,
        }

    @cached_property
    def client(self):
        """A thread-safe boto3 S3 client."""
        from botocore import UNSIGNED
        from botocore.config import Config

        kwargs = self._config_kwargs()
        if self.credentials.anonymous:
            kwargs["signature_version"] = UNSIGNED
        session = self.credentials.boto3_session()
        return session.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            config=Config(**kwargs),
        )

    def close(self) -> None:
        """Close the client's pooled connections (their sockets); a later request reconnects."""
        client = self.__dict__.get("client")
        if client is not None:
            client.close()

    # -- requests ---------------------------------------------------------------------

    def list_buckets(self) -> list[str]:
        """Names of the buckets these keys can see, sorted."""
        try:
            response = self.client.list_buckets()
        except Exception as exc:
            raise self.translate(exc, action="list buckets") from None
        return sorted(b["Name"] for b in response.get("Buckets", []))

    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        limit: int = DEFAULT_MAX_OBJECTS,
        cancel: threading.Event | None = None,
    ) -> Listing:
        """All objects under ``prefix`` (recursively), paginated, stopping at ``limit``."""
        objects: list[ObjectInfo] = []
        truncated = False
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": min(1000, limit + 1)}
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    if len(objects) >= limit:
                        truncated = True
                        break
                    objects.append(_object_info(item))
                if truncated or (cancel is not None and cancel.is_set()):
                    break
        except Exception as exc:
            raise self.translate(exc, bucket=bucket, action="list objects") from None
        return Listing(objects=objects, truncated=truncated, limit=limit)

    def list_directories(self, bucket: str, prefix: str = "") -> list[str]:
        """The "sub-directories" (common prefixes, ending in ``/``) directly under ``prefix``."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[str] = []
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                found.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        except Exception as exc:
            raise self.translate(exc, bucket=bucket, action="list directories") from None
        return sorted(found)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """Size, date and ETag of one object."""
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise self.translate(exc, bucket=bucket, key=key, action="read") from None
        try:
            return ObjectInfo(
                key=key,
                size=int(response["ContentLength"]),
                last_modified=response["LastModified"],
                etag=response.get("ETag", "").strip('"'),
            )
        except (KeyError, TypeError, ValueError):  # answered, but not as S3 does
            raise StorageError(not_s3(self.endpoint, "read", f"s3://{bucket}/{key}")) from None

    def get_object(self, bucket: str, key: str, *, start: int | None = None,
                   length: int | None = None, if_match: str | None = None) -> tuple[dict, bytes]:
        """One GET (ranged when ``start`` is given), read to the end: ``(response, body)``.

        botocore retries a request that fails, but not a body cut short after the headers
        arrived (a connection dropped mid-transfer, a proxy timing out): such a read is
        requested again here, up to ``max_attempts`` times in all. Raises botocore's
        exceptions (translate them with :meth:`translate`).
        """
        kwargs = {"Bucket": bucket, "Key": key}
        if start is not None:
            kwargs["Range"] = f"bytes={start}-{'' if length is None else start + length - 1}"
        if if_match:
            kwargs["IfMatch"] = f'"{if_match}"'
        attempts = max(1, self.max_attempts)
        for attempt in range(1, attempts + 1):
            response = self.client.get_object(**kwargs)
            try:
                return response, response["Body"].read()
            except body_errors() as exc:
                if attempt == attempts:
                    raise
                log.info("Body of s3://%s/%s cut short (%s); reading it again (attempt %d of %d)",
                         bucket, key, type(exc).__name__, attempt + 1, attempts)
        raise AssertionError("unreachable")

    def get_range(self, bucket: str, key: str, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes of an object from ``start`` (one ranged GET)."""
        try:
            _response, data = self.get_object(bucket, key, start=start, length=length)
        except Exception as exc:
            raise self.translate(exc, bucket=bucket, key=key, action="read") from None
        if len(data) != length:
            raise StorageError(
                f"Short read from s3://{bucket}/{key}: asked for {length} bytes at {start}, "
                f"got {len(data)}."
            )
        return data

    # -- errors -----------------------------------------------------------------------

    def translate(
        self, exc: BaseException, *, bucket: str | None = None, key: str | None = None,
        action: str = "access",
    ) -> StorageError:
        """Turn a botocore/s3fs/OS exception into a :class:`StorageError` with a clear sentence."""
        return translate_error(
            exc, endpoint=self.endpoint, bucket=bucket, key=key, action=action,
            credentials=self.credentials,
        )


def translate_error(
    exc: BaseException,
    *,
    endpoint: str,
    bucket: str | None = None,
    key: str | None = None,
    action: str = "access",
    credentials: Credentials | None = None,
) -> StorageError:
    """Map any S3 failure to one of our exception types with a one-line message.

    The message names the action, the object and the endpoint in our words, with the reply's
    error code and HTTP status; never the reply's message or body (:func:`_refused`)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError as BotoConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )
    from botocore.parsers import ResponseParserError

    if isinstance(exc, StorageError):
        return exc
    where = f"s3://{bucket}/{key}" if bucket and key else (f"in bucket {bucket!r}" if bucket else "")
    at = f" at {endpoint}"
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"No S3 credentials found to {action}{at}: give a key file or set AWS keys.")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))  # checked by _refused before it is repeated
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return AccessDenied(f"The S3 keys were rejected by {endpoint} ({code}): check the access and secret key.")
        if code in {"AccessDenied", "403", "Forbidden"} or status == 403:
            return AccessDenied(f"Permission denied to {action} {where}{at} (403).".replace("  ", " "))
        if code == "NoSuchBucket":
            return NotFound(f"Bucket {bucket!r} does not exist{at}.")
        if code in {"NoSuchKey", "404", "NotFound"} or status == 404:
            return NotFound(f"Not found{at}: {where or 'the requested resource'} (404).")
        if code in {"InvalidRange", "416"} or status == 416:
            return StorageError(f"Requested bytes lie outside {where} (416): the object may be truncated.")
        return StorageError(_scrub(_refused(code, status, action, where, at), credentials))
    if isinstance(exc, ResponseParserError):  # its text holds the reply's body
        return StorageError(not_s3(endpoint, action, where))
    if isinstance(exc, body_errors()) and not isinstance(exc, ReadTimeoutError | OSError):
        return EndpointUnreachable(
            f"The connection to {endpoint} broke while trying to {action} {where} "
            "(after retries).".replace("  ", " ")
        )
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return EndpointUnreachable(f"{endpoint} did not answer in time while trying to {action} {where} (after retries).".replace("  ", " "))
    if isinstance(exc, FileNotFoundError):  # s3fs's 404
        return NotFound(f"Not found{at}: {where} (404).")
    if isinstance(exc, PermissionError):  # s3fs's 403
        return AccessDenied(f"Permission denied to {action} {where}{at} (403).")
    if isinstance(exc, BotoConnectionError | ConnectionError | OSError):
        return EndpointUnreachable(f"Cannot reach the S3 endpoint {endpoint} ({type(exc).__name__}).")
    detail = shorten(str(exc).split("\n", 1)[0], 200)  # a library's words, not a reply body
    text = f"Could not {action} {where}{at}: {type(exc).__name__}: {detail}".replace("  ", " ")
    return StorageError(_scrub(text, credentials))


#: What an S3 error code looks like (``NoSuchKey``, ``SlowDown``, ``404``); anything else in a
#: reply's ``<Code>`` is not repeated.
_ERROR_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.]{0,63}")


def not_s3(endpoint: str, action: str, where: str) -> str:
    """The sentence for a reply that is not one S3 gives (another kind of service)."""
    return (f"The reply of {endpoint} to {action} {where} is not an S3 reply "
            "(is this an S3 endpoint?).").replace("  ", " ")


def _refused(code: str, status, action: str, where: str, at: str) -> str:
    """The sentence for an S3 error reply: its code (when it looks like one), its HTTP status
    and our own words, never the reply's ``<Message>``, reason phrase or body (an endpoint
    may be any service, and its reply may hold what it should not show, or markup)."""
    code = code if _ERROR_CODE.fullmatch(code) and code != str(status) else ""
    named = ", ".join(part for part in (code, f"HTTP {status}" if status else "") if part)
    if code == "SlowDown" or status == 503:
        why = "the endpoint is busy; try again later"
    elif isinstance(status, int) and status >= 500:
        why = "the endpoint failed to answer it"
    else:
        why = "the endpoint refused the request"
    text = f"S3 error while trying to {action} {where}{at}: {why}"
    return (f"{text} ({named})." if named else f"{text}.").replace("  ", " ")


@functools.cache
def body_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of reading a response body that stopped early: worth one more request."""
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import ProtocolError

    return (IncompleteReadError, ResponseStreamingError, ConnectionClosedError, ReadTimeoutError,
            ProtocolError, ConnectionError)


def _scrub(text: str, credentials: Credentials | None) -> str:
    return credentials.scrub(text) if credentials is not None else text


def _object_info(item: dict) -> ObjectInfo:
    return ObjectInfo(
        key=item["Key"],
        size=int(item["Size"]),
        last_modified=item["LastModified"],
        etag=str(item.get("ETag", "")).strip('"'),
    )
