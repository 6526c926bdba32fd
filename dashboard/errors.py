"""Exceptions that carry a message meant for the scientist.

Every error the user can see derives from :class:`EchoError`. Its ``str()`` is one short
sentence, free of secrets and tracebacks, that the dashboard shows in a status line and the CLI
prints as ``error: ...``.
"""

from __future__ import annotations


class EchoError(Exception):
    """Base class of all user-facing errors of ECHO S3 Viewer."""


class ConfigError(EchoError):
    """A setting (CLI option, environment variable) has an unusable value."""
