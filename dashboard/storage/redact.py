"""Keep S3 keys out of third-party DEBUG logs.

With DEBUG logging on, botocore prints every request's headers, including
``Authorization: AWS4-HMAC-SHA256 Credential=<ACCESS KEY>/...``, the SigV4 signature and any
session token; a rejected signature's response body carries ``<AWSAccessKeyId>``; presigned URLs
carry ``X-Amz-Credential=``; IAM/STS responses (an AWS profile that assumes a role) are logged
with ``<SecretAccessKey>`` and ``<SessionToken>`` in their bodies.

:func:`install_log_redaction` puts a :class:`RedactingHandler` on the top logger of each library
that talks S3 for us (botocore, aiobotocore, boto3, s3transfer, s3fs, fsspec, urllib3, aiohttp).
Python hands a record to the handlers of its own logger first and then to those of each
ancestor, all with the same record object; our handler sits on the library's top logger, so it
rewrites the record in place before it reaches the root logger's handlers (console, file, the
dashboard's log view, pytest's ``caplog``), for every current and future child logger such as
``botocore.endpoint``. It emits nothing itself.

Redaction is by pattern, not by remembering the keys of each session: no secret is kept in
module state, and keys of every session (and of sessions we never saw) are covered.
"""

from __future__ import annotations

import logging
import re
import threading

__all__ = ["LIBRARY_LOGGERS", "RedactingHandler", "install_log_redaction", "redact"]

#: Top-level loggers of the libraries that carry S3 requests.
LIBRARY_LOGGERS = (
    "botocore", "aiobotocore", "boto3", "s3transfer", "s3fs", "fsspec", "urllib3", "aiohttp",
)

MASK = "***"
_INSTALL_LOCK = threading.Lock()

_PATTERNS = [
    # SigV4 header "Credential=AKIA.../date/..." and presigned "X-Amz-Credential=AKIA...%2F..."
    (re.compile(r"(Credential=)[^/%&\s,'\"]+"), rf"\g<1>{MASK}"),
    # SigV4 signatures: header "Signature=hex", query "X-Amz-Signature=hex", botocore.auth's
    # "Signature:\nhex"
    (re.compile(r"(Signature[=:]\s*)[0-9a-fA-F]{16,}"), rf"\g<1>{MASK}"),
    # Session tokens: header dict "'X-Amz-Security-Token': b'...'", canonical request
    # "x-amz-security-token:...", query "X-Amz-Security-Token=..."
    (re.compile(r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^'\"&\s]+", re.IGNORECASE),
     rf"\g<1>{MASK}"),
    # Credentials in IAM/STS/SSO responses (e.g. an AWS profile that assumes a role):
    # "<SecretAccessKey>...</SecretAccessKey>", '"SessionToken": "..."', ...
    (re.compile(r"(<(?:AccessKeyId|SecretAccessKey|SessionToken)>)[^<]+"), rf"\g<1>{MASK}"),
    (re.compile(r"""(["'](?:AccessKeyId|SecretAccessKey|SessionToken|Token)["']\s*:\s*["'])"""
                r"""[^"']+"""), rf"\g<1>{MASK}"),
    # Error bodies "<AWSAccessKeyId>...</AWSAccessKeyId>", SigV2 query "AWSAccessKeyId=...",
    # parsed dicts "'AWSAccessKeyId': '...'"
    (re.compile(r"(AWSAccessKeyId(?:>|['\"]?\s*[:=]\s*['\"]?))[^<'\"&\s]+"), rf"\g<1>{MASK}"),
    # SigV2 header "Authorization: AWS AKIA...:signature"
    (re.compile(r"(Authorization['\"]?\s*[:=]\s*b?['\"]?AWS )[^:'\"\s]+:[^'\"\s]+"),
     rf"\g<1>{MASK}"),
]


def redact(text: str) -> str:
    """Mask access keys, signatures and session tokens in ``text`` (request logs, URLs)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingHandler(logging.Handler):
    """A handler that emits nothing and rewrites each record's text with :func:`redact`."""

    def handle(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the real handlers to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does it
        pass


def install_log_redaction(names: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Put one :class:`RedactingHandler` first on each of ``names`` (idempotent, cheap)."""
    with _INSTALL_LOCK:
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(h, RedactingHandler) for h in logger.handlers):
                # First, so it runs before any handler a user attached to the library's logger.
                logger.handlers.insert(0, RedactingHandler())
