"""Settings: defaults, overridden by environment variables, overridden by CLI options."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigError
from .text import shown

DEFAULT_ENDPOINT = "https://s3.echo.stfc.ac.uk"
DEFAULT_MAX_OBJECTS = 5000
#: Pixels per frame a session reads at most (8192 × 8192): larger frames are refused before any
#: allocation (``ECHO_S3_MAX_FRAME_PIXELS``, ``--max-frame-pixels``).
DEFAULT_MAX_FRAME_PIXELS = 64 * 1024**2

ENV_ENDPOINT = "ECHO_S3_ENDPOINT"
ENV_CREDENTIALS = "ECHO_S3_CREDENTIALS"
ENV_MAX_OBJECTS = "ECHO_S3_MAX_OBJECTS"
ENV_SERVER_KEYS = "ECHO_S3_SERVER_KEYS"
ENV_USER_ROOT = "ECHO_S3_USER_ROOT"
ENV_ALLOWED_ENDPOINTS = "ECHO_S3_ALLOWED_ENDPOINTS"
ENV_MAX_FRAME_PIXELS = "ECHO_S3_MAX_FRAME_PIXELS"
ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"


@dataclass(frozen=True)
class Settings:
    """Where to connect and how much to list.

    Attributes
    ----------
    endpoint : str
        S3 endpoint URL (ECHO by default).
    credentials_path : Path or None
        JSON key file ``{"access_key": ..., "secret_key": ...}``; ``None`` means the
        environment or an AWS profile.
    profile : str or None
        AWS profile name (``~/.aws/credentials``).
    max_objects : int
        Stop listing after this many objects and say that more exist.
    endpoint_given : bool
        Whether :attr:`endpoint` was given (CLI, environment, or a non-default value), so that it
        beats a key file's ``"endpoint"`` (see :func:`resolve_endpoint`).
    server_keys : bool
        Whether a session may use keys found on the server: a key-file path typed in the page,
        the server's environment or AWS profiles. Off on a shared server, where those keys are
        the operator's or another user's; sessions then use only keys given in the page (or the
        ``credentials`` the server was started with, which every session gets anyway).
    user_root : str or None
        ``serve --user-root`` (``ECHO_S3_USER_ROOT``): the per-user areas on a shared server,
        e.g. ``/srv/echo/{user}`` (:mod:`dashboard.storage.area`).
    allowed_endpoints : tuple of str or None
        The only endpoints a session may connect to (the operator's list on a shared server,
        shown as a choice; :attr:`endpoint` is one of them, the first unless given); ``None``:
        any endpoint, typed freely (one user on their own machine).
    max_frame_pixels : int
        Frames with more pixels are refused before anything is read (the pixel budget).
    scheduler : str or None
        The Dask scheduler the Process step offers (``DASK_SCHEDULER_ADDRESS``). On a shared
        server it is the only one a session may use (none: threads only); alone, the user may
        type another.
    """

    endpoint: str = DEFAULT_ENDPOINT
    credentials_path: Path | None = None
    profile: str | None = None
    max_objects: int = DEFAULT_MAX_OBJECTS
    server_keys: bool = True
    endpoint_given: bool | None = None
    user_root: str | None = None
    allowed_endpoints: tuple[str, ...] | None = None
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    scheduler: str | None = None

    def __post_init__(self):
        if self.endpoint_given is None:  # Settings(endpoint=X): given unless it is the default
            object.__setattr__(self, "endpoint_given", self.endpoint != DEFAULT_ENDPOINT)
        if self.allowed_endpoints is not None:
            allowed = endpoint_list(self.allowed_endpoints)
            object.__setattr__(self, "allowed_endpoints", allowed)
            if self.endpoint not in allowed:
                if self.endpoint_given:
                    raise ConfigError(f"The endpoint {self.endpoint} is not one of the allowed "
                                      f"endpoints ({', '.join(allowed)}).")
                object.__setattr__(self, "endpoint", allowed[0])  # none chosen: the first
            object.__setattr__(self, "endpoint_given", True)  # chosen, never the key file's

    def endpoint_for(self, credentials=None) -> str:
        """The endpoint to connect to with ``credentials``: :func:`resolve_endpoint`'s rule."""
        return resolve_endpoint(self.endpoint if self.endpoint_given else None, credentials)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Build settings from ``env`` (default ``os.environ``), then apply non-None overrides."""
        env = os.environ if env is None else env
        values: dict = {}
        if env.get(ENV_ENDPOINT):
            values["endpoint"] = normalize_endpoint(env[ENV_ENDPOINT])
            values["endpoint_given"] = True
        if env.get(ENV_CREDENTIALS):
            values["credentials_path"] = Path(env[ENV_CREDENTIALS]).expanduser()
        if env.get("AWS_PROFILE"):
            values["profile"] = env["AWS_PROFILE"]
        if env.get(ENV_MAX_OBJECTS):
            values["max_objects"] = _positive_int(env[ENV_MAX_OBJECTS], ENV_MAX_OBJECTS)
        if env.get(ENV_MAX_FRAME_PIXELS):
            values["max_frame_pixels"] = frame_budget(env)
        if env.get(ENV_SERVER_KEYS):
            values["server_keys"] = _flag(env[ENV_SERVER_KEYS], ENV_SERVER_KEYS)
        if env.get(ENV_USER_ROOT):
            values["user_root"] = env[ENV_USER_ROOT]
        if env.get(ENV_SCHEDULER, "").strip():
            values["scheduler"] = env[ENV_SCHEDULER].strip()
        if env.get(ENV_ALLOWED_ENDPOINTS):
            values["allowed_endpoints"] = endpoint_list(env[ENV_ALLOWED_ENDPOINTS],
                                                        ENV_ALLOWED_ENDPOINTS)
        settings = cls(**values)
        return settings.with_overrides(**overrides)

    def with_overrides(self, **overrides) -> Settings:
        """Return a copy with every override that is not ``None`` applied."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "credentials_path" in given:
            given["credentials_path"] = Path(given["credentials_path"]).expanduser()
        if "max_objects" in given:
            given["max_objects"] = _positive_int(given["max_objects"], "max_objects")
        if "max_frame_pixels" in given:
            given["max_frame_pixels"] = _positive_int(given["max_frame_pixels"],
                                                      "max_frame_pixels")
        if "endpoint" in given:
            given["endpoint"] = normalize_endpoint(given["endpoint"])
            given.setdefault("endpoint_given", True)
        return replace(self, **given)


def frame_budget(env: Mapping[str, str] | None = None) -> int:
    """The pixel budget per frame: ``ECHO_S3_MAX_FRAME_PIXELS`` or :data:`DEFAULT_MAX_FRAME_PIXELS`."""
    value = (os.environ if env is None else env).get(ENV_MAX_FRAME_PIXELS)
    return _positive_int(value, ENV_MAX_FRAME_PIXELS) if value else DEFAULT_MAX_FRAME_PIXELS


def resolve_endpoint(given: str | None = None, credentials=None) -> str:
    """The one rule for the S3 endpoint, everywhere (CLI, served sessions, notebooks, workers).

    An endpoint *given* (``--endpoint``, ``ECHO_S3_ENDPOINT``, the page's Endpoint field) wins;
    else the key file's ``"endpoint"`` (``credentials.endpoint``); else ECHO
    (:data:`DEFAULT_ENDPOINT`). Raises :class:`ConfigError` for an unusable URL.
    """
    from_keys = getattr(credentials, "endpoint", None) if credentials is not None else None
    return normalize_endpoint(given or from_keys or DEFAULT_ENDPOINT)


def allowed_endpoint(given: str | None = None, credentials=None,
                     allowed: tuple[str, ...] | list[str] | None = None) -> str:
    """:func:`resolve_endpoint`, kept to the operator's ``allowed`` endpoints when there are.

    Raises :class:`ConfigError` (one sentence) when the endpoint to connect to, or the one a key
    file names, is not allowed: a session, a link or a key file cannot send this server's
    requests anywhere else.
    """
    url = resolve_endpoint(given, credentials)
    if not allowed:
        return url
    if url not in allowed:
        raise ConfigError(f"This server does not connect to {shown(url)}: choose one of the "
                          "endpoints it offers.")
    from_keys = getattr(credentials, "endpoint", None) if credentials is not None else None
    if from_keys and _normal(from_keys) not in allowed:
        raise ConfigError(f"The keys are for the endpoint {shown(from_keys)}, which this server "
                          "does not connect to.")
    return url


def endpoint_list(value, name: str = "allowed endpoints") -> tuple[str, ...]:
    """``"a,b"`` or a sequence of URLs as a tuple of normalised endpoints (in order, no
    repeats); :class:`ConfigError` for an empty list or an unusable URL."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = tuple(dict.fromkeys(normalize_endpoint(u) for u in items if str(u).strip()))
    if not urls:
        raise ConfigError(f"{name} lists no endpoint.")
    return urls


def _normal(url: str) -> str:
    try:
        return normalize_endpoint(url)
    except ConfigError:
        return str(url)


def normalize_endpoint(url: str) -> str:
    """Check an endpoint URL and strip a trailing slash; raise :class:`ConfigError` if unusable."""
    url = str(url).strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ConfigError(f"Endpoint must be an http:// or https:// URL, got {url!r}.")
    return url


def _positive_int(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, got {value!r}.") from None
    if number < 1:
        raise ConfigError(f"{name} must be at least 1, got {number}.")
    return number


def _flag(value: str, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (yes/no), got {value!r}.")
