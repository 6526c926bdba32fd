"""Serve the dashboard: ``panel serve dashboard/app.py`` or ``echo-s3-viewer serve``.

Under ``panel serve`` this module runs once per browser session: it builds a new
:class:`~dashboard.state.session.Session` (own keys, own S3 connection, own files and jobs)
and marks its template servable. Settings come from the environment
(``ECHO_S3_ENDPOINT``, ``ECHO_S3_CREDENTIALS``, ``ECHO_S3_MAX_OBJECTS``, ``ECHO_S3_USER_ROOT``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import panel as pn

from dashboard.config import Settings
from dashboard.errors import ConfigError, EchoError
from dashboard.state.deliveries import Deliveries
from dashboard.state.session import Session
from dashboard.storage.area import check_user_root
from dashboard.ui.app import TITLE, EchoS3Viewer, extension
from dashboard.ui.deliver import delivery_route
from dashboard.ui.widgets import status_line

log = logging.getLogger("dashboard.app")


def create_app(settings: Settings | None = None, *, credentials=None, deliveries=None,
               login: bool = False):
    """A new session and its page (a ``FastListTemplate``).

    Parameters
    ----------
    settings : Settings, optional
        ``Settings.from_env()`` by default.
    credentials : Credentials, optional
        Keys every new session connects with at once (the demo store's).
    deliveries : Deliveries, optional
        The server's downloads to browsers (a login without ``--user-root``).
    login : bool
        The server asks for a login: the session is its user's (``pn.state.user``).
    """
    extension()
    user = pn.state.user
    try:
        settings = settings or Settings.from_env()
        check_user_root(settings.user_root, login=login or user is not None)
    except EchoError as exc:  # e.g. a bad ECHO_S3_ENDPOINT: say so instead of a traceback
        return _error_page(str(exc))
    if login and not user:
        return _error_page("this server needs a login, and the session has no user.")
    session = Session(settings, connect=False, user=user, deliveries=deliveries)
    page = EchoS3Viewer(session=session).template()
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        session.tasks.dispatch = _scheduler(doc)
        pn.state.on_session_destroyed(lambda context: session.close())
        # The work starts once the page is there: a change made while the browser was still
        # pulling the document could be lost (a link opened with server keys stayed on the
        # Browse tab, its frames loaded behind it).
        pn.state.onload(lambda: session.start(credentials=credentials))
    else:
        session.start(credentials=credentials)
    return page


def _error_page(message: str):
    return pn.template.FastListTemplate(
        title=TITLE, main=[status_line(f"The dashboard cannot start: {message}",
                                       css_class="echo-start-error", error=True)])


def _scheduler(doc):
    """Apply background results on the session's event loop, holding its document lock."""
    from panel.io.state import set_curdoc

    def dispatch(fn) -> None:
        with set_curdoc(doc):
            pn.state.execute(fn, schedule=True)

    return dispatch


def login_settings(settings: Settings, credentials=None) -> Settings:
    """A server with a login is shared: its sessions connect only to the operator's endpoints,
    by default the one configured (``--endpoint``/``ECHO_S3_ENDPOINT``, else the server's key
    file's, else ECHO); ``--allowed-endpoints`` or repeated ``--endpoint`` list more."""
    if settings.allowed_endpoints is not None:
        return settings
    keys = credentials
    if keys is None and settings.credentials_path is not None and not settings.endpoint_given:
        from dashboard.storage.credentials import from_json_file

        try:
            keys = from_json_file(settings.credentials_path)
        except EchoError:
            keys = None  # each session says what is wrong with the file
    return settings.with_overrides(allowed_endpoints=[settings.endpoint_for(keys)])


def _apps(settings: Settings, credentials, *, deliveries=None, login: bool = False) -> dict:
    """The served app; checks ``--user-root`` once before the server starts."""
    check_user_root(settings.user_root, login=login)

    def app():  # Panel calls plain functions once per session (a partial would be rendered)
        return create_app(settings, credentials=credentials, deliveries=deliveries, login=login)

    return {"": app}


def _origins(address: str, port: int, allow_websocket_origin) -> list[str] | None:
    origins = list(allow_websocket_origin or [])
    return origins or None  # None: Bokeh accepts only the address it serves (localhost)


# -- who may open the dashboard ------------------------------------------------------------

ENV_COOKIE_SECRET = "ECHO_S3_COOKIE_SECRET"
ENV_BASIC_AUTH = "ECHO_S3_BASIC_AUTH"
MIN_COOKIE_SECRET = 32

# Panel's own config reads these environment variables *in preference to* values set in code,
# so each setting must come from one source: a second, different value is refused.
_SOURCES = {
    "cookie_secret": ("--cookie-secret", ENV_COOKIE_SECRET, "PANEL_COOKIE_SECRET",
                      "BOKEH_COOKIE_SECRET"),
    "basic_auth": ("--basic-auth", ENV_BASIC_AUTH),
    "oauth_provider": ("--oauth-provider", "PANEL_OAUTH_PROVIDER"),
    "oauth_key": ("--oauth-key", "PANEL_OAUTH_KEY"),
    "oauth_secret": ("--oauth-secret", "PANEL_OAUTH_SECRET"),
    "oauth_redirect_uri": ("--oauth-redirect-uri", "PANEL_OAUTH_REDIRECT_URI"),
    "oauth_extra_params": ("--oauth-extra-params", "PANEL_OAUTH_EXTRA_PARAMS"),
    "oauth_encryption_key": ("--oauth-encryption-key", "PANEL_OAUTH_ENCRYPTION"),
}
# The Panel config parameters that get_server() sets process-wide (restored by RunningServer).
_PANEL_AUTH_CONFIG = ("_cookie_secret", "_oauth_provider", "_oauth_key", "_oauth_secret",
                      "_oauth_redirect_uri", "_oauth_extra_params", "_oauth_encryption_key")


@dataclass(frozen=True)
class ServerAuth:
    """Who may open a served dashboard: Panel's basic auth or an OAuth provider.

    Build it with :meth:`from_options`, which reads the environment too and checks every value.
    The password, the cookie secret, the OAuth secret and the encryption key never appear in
    the ``repr`` or in an error message.

    Attributes
    ----------
    basic_auth : str or None
        One shared password (any user name), or the path of a JSON file ``{"user": "password"}``
        (Panel re-reads the file at every login, so users can be changed without a restart).
    cookie_secret : str
        Signs the login cookie (at least 32 characters).
    oauth_provider : str or None
        One of Panel's providers (``github``, ``gitlab``, ``azure``, ``google``, ``okta``,
        ``generic``, ...).
    """

    basic_auth: str | None = field(default=None, repr=False)
    cookie_secret: str = field(default="", repr=False)
    oauth_provider: str | None = None
    oauth_key: str | None = None
    oauth_secret: str | None = field(default=None, repr=False)
    oauth_redirect_uri: str | None = None
    oauth_extra_params: dict | None = None
    oauth_encryption_key: str | None = field(default=None, repr=False)
    login_template: str | None = None
    logout_template: str | None = None

    @classmethod
    def from_options(cls, *, env: Mapping[str, str] | None = None, **options) -> ServerAuth | None:
        """Check the options (keyword names as the attributes) and the environment.

        Returns ``None`` when neither basic auth nor an OAuth provider is asked for.

        Raises
        ------
        ConfigError
            One sentence naming the option, never its secret value.
        """
        env = os.environ if env is None else env
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown auth options: {sorted(unknown)}")
        values = {name: _one_source(name, options.get(name), env) for name in _SOURCES}
        basic, provider = values["basic_auth"], values["oauth_provider"]
        if basic is None and provider is None:
            given = [_SOURCES[n][0] for n in _SOURCES if options.get(n) is not None]
            given += [f"--{n.replace('_', '-')}" for n in ("login_template", "logout_template")
                      if options.get(n) is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} needs --basic-auth or --oauth-provider.")
            return None
        if basic is not None and provider is not None:
            raise ConfigError("Choose one of --basic-auth and --oauth-provider, not both.")
        secret = values["cookie_secret"]
        if not secret:
            raise ConfigError(
                f"A login needs a cookie secret: pass --cookie-secret or set {ENV_COOKIE_SECRET} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))').")
        if len(secret) < MIN_COOKIE_SECRET:
            raise ConfigError(f"The cookie secret must be at least {MIN_COOKIE_SECRET} characters "
                              "long (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))').")
        if basic is not None:
            _check_basic_auth(basic)
        else:
            values.update(_checked_oauth(values))
        for name in ("login_template", "logout_template"):
            path = options.get(name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')}: no such file: {path}")
            values[name] = None if path is None else str(Path(path).resolve())
        return cls(**values)

    @property
    def kind(self) -> str:
        """``"basic"`` or ``"oauth (<provider>)"`` (for log lines)."""
        return "basic" if self.basic_auth is not None else f"oauth ({self.oauth_provider})"

    def server_kwargs(self) -> dict:
        """Keyword arguments of ``panel.io.server.get_server`` / ``pn.serve``."""
        kwargs = {"cookie_secret": self.cookie_secret, "login_template": self.login_template,
                  "logout_template": self.logout_template}
        if self.basic_auth is not None:
            kwargs["basic_auth"] = self.basic_auth
            return kwargs
        kwargs.update(oauth_provider=self.oauth_provider, oauth_key=self.oauth_key,
                      oauth_secret=self.oauth_secret, oauth_redirect_uri=self.oauth_redirect_uri,
                      oauth_extra_params=self.oauth_extra_params or {})
        return kwargs

    def apply_encryption(self) -> None:
        """Encrypt OAuth tokens in cookies: Panel 1.9's ``get_server`` accepts
        ``oauth_encryption_key`` but does not use it (only ``panel serve`` does), so set it here."""
        if self.oauth_encryption_key is None:
            return
        from cryptography.fernet import Fernet

        key = self.oauth_encryption_key.encode("ascii")
        pn.config.oauth_encryption_key = key
        pn.state.encryption = Fernet(key)


def _one_source(name: str, given, env: Mapping[str, str]):
    flag, *variables = _SOURCES[name]
    found = [(flag, given)] if given not in (None, "") else []
    found += [(var, env[var]) for var in variables if env.get(var)]
    if len({str(value) for _, value in found}) > 1:
        raise ConfigError(f"Give the {name.replace('_', ' ')} once: "
                          f"{' and '.join(src for src, _ in found)} differ.")
    if given == "" and not found:
        raise ConfigError(f"{flag} is empty.")
    return found[0][1] if found else None


def _check_basic_auth(value: str) -> None:
    path = Path(value).expanduser()
    if path.is_file():
        try:
            users = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            raise ConfigError(f"--basic-auth file {path} is not readable JSON.") from None
        if (not isinstance(users, dict) or not users
                or not all(isinstance(u, str) and u and isinstance(p, str) and p
                           for u, p in users.items())):
            raise ConfigError(f"--basic-auth file {path} must hold a JSON object of "
                              '"user": "password" pairs (non-empty strings).')
    elif value.endswith(".json"):  # meant as a file, surely not a password
        raise ConfigError(f"--basic-auth: no such file: {path}")


def _checked_oauth(values: dict) -> dict:
    from panel.auth import AUTH_PROVIDERS

    provider = str(values["oauth_provider"]).lower()
    if provider not in AUTH_PROVIDERS:
        shown = f" {provider!r}" if re.fullmatch(r"[a-z0-9_-]{1,32}", provider) else ""
        raise ConfigError(f"Unknown OAuth provider{shown}: choose one of "
                          f"{', '.join(sorted(AUTH_PROVIDERS))}.")
    checked = {"oauth_provider": provider}
    if provider != "pam":
        for name, flag, var in (("oauth_key", "--oauth-key", "PANEL_OAUTH_KEY"),
                                ("oauth_secret", "--oauth-secret", "PANEL_OAUTH_SECRET")):
            if not values[name]:
                raise ConfigError(f"OAuth with {provider} needs {flag} (or {var}).")
    uri = values["oauth_redirect_uri"]
    if uri is not None and not re.match(r"https?://[^/\s]+", str(uri)):
        raise ConfigError("--oauth-redirect-uri must be an http:// or https:// URL.")
    extra = values["oauth_extra_params"]
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            raise ConfigError('--oauth-extra-params must be a JSON object, e.g. '
                              '\'{"tenant": "..."}\'.') from None
    if extra is not None and not (isinstance(extra, dict) and all(isinstance(k, str) for k in extra)):
        raise ConfigError('--oauth-extra-params must be a JSON object, e.g. \'{"tenant": "..."}\'.')
    checked["oauth_extra_params"] = extra
    key = values["oauth_encryption_key"]
    if key is not None:
        try:
            import cryptography.fernet  # noqa: F401
        except ImportError:
            raise ConfigError("--oauth-encryption-key needs the 'cryptography' package.") from None
        try:
            raw = base64.urlsafe_b64decode(str(key).encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError("--oauth-encryption-key must be 32 url-safe base64-encoded bytes "
                              "(make one with: panel oauth-secret).")
    return checked


def _is_loopback(address: str | None) -> bool:
    if address in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(address or "0.0.0.0").is_loopback
    except ValueError:
        return False


def _server_kwargs(*, port: int, address: str,
                   allow_websocket_origin, prefix: str | None, auth: ServerAuth | None,
                   ssl_certfile: str | None, ssl_keyfile: str | None,
                   deliveries: Deliveries | None = None) -> dict:
    """The arguments of ``get_server``/``pn.serve`` shared by :func:`serve` and
    :class:`RunningServer`; logs one warning for a login over plain HTTP on the network."""
    kwargs = dict(
        port=port, address=address,
        websocket_origin=_origins(address, port, allow_websocket_origin),
        prefix=prefix or "", title=TITLE,
        extra_patterns=[delivery_route(deliveries)] if deliveries is not None else [],
    )
    if ssl_certfile:
        kwargs.update(ssl_certfile=str(ssl_certfile), ssl_keyfile=ssl_keyfile and str(ssl_keyfile))
    if auth is not None:
        kwargs.update(auth.server_kwargs())
        auth.apply_encryption()
        if not ssl_certfile and not _is_loopback(address):
            log.warning("Login (%s) on %s without HTTPS: passwords and cookies cross the network "
                        "in clear text unless an HTTPS proxy is the only way in.",
                        auth.kind, address or "all addresses")
        if auth.oauth_provider and auth.oauth_encryption_key is None:
            log.warning("OAuth without --oauth-encryption-key: access tokens are stored "
                        "unencrypted in cookies (make a key with: panel oauth-secret).")
    return kwargs


class RunningServer:
    """A dashboard server running on its own thread (tests, embedding): ``.url``, ``.stop()``.

    Extra keyword arguments go to Panel's ``get_server`` (and Bokeh's ``Server``), e.g.
    ``unused_session_lifetime_milliseconds`` to end closed sessions sooner.
    """

    def __init__(self, settings: Settings, *, credentials=None, port: int = 0,
                 address: str = "127.0.0.1", allow_websocket_origin=None,
                 prefix: str | None = None, auth: ServerAuth | None = None,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 **server_kwargs):
        import asyncio

        from panel.io.server import get_server
        from tornado.ioloop import IOLoop

        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server = None
        # get_server() sets Panel's process-wide auth config; stop() puts it back.
        self._panel_config = {name: getattr(pn.config, name) for name in _PANEL_AUTH_CONFIG}
        self._encryption = pn.state.encryption
        if auth is not None:
            settings = login_settings(settings, credentials)
        self.deliveries = Deliveries()  # downloads to browsers (a login without areas)
        apps = _apps(settings, credentials, deliveries=self.deliveries, login=auth is not None)
        kwargs = _server_kwargs(port=port, address=address,
                                allow_websocket_origin=allow_websocket_origin, prefix=prefix,
                                auth=auth, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                                deliveries=self.deliveries)

        def run() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            loop = IOLoop.current()
            try:
                self.server = get_server(apps, loop=loop, start=False, show=False,
                                         **kwargs, **server_kwargs)
                self.server.start()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                self._error = exc
                self._ready.set()
                return
            self._loop = loop
            self._ready.set()
            loop.start()

        self._thread = threading.Thread(target=run, name="echo-dashboard-server", daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        self.port = self.server.port
        scheme = "https" if ssl_certfile else "http"
        self.url = f"{scheme}://{address}:{self.port}/{(prefix or '').strip('/')}".rstrip("/") + "/"

    def stop(self) -> None:
        if self.server is not None:
            loop = self._loop
            loop.add_callback(self.server.stop)
            loop.add_callback(loop.stop)
            self._thread.join(10)
            self.server = None
        pn.config.param.update(self._panel_config)
        pn.state.encryption = self._encryption

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(
    *,
    settings: Settings,
    demo: bool = False,
    port: int = 0,
    address: str = "127.0.0.1",
    show: bool = False,
    allow_websocket_origin=None,
    prefix: str | None = None,
    auth: ServerAuth | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    """Serve until interrupted (``echo-s3-viewer serve``).

    With ``demo=True`` the embedded demo S3 store starts first and every new session connects
    to it. With a key file in ``settings`` every session connects at start. Websocket
    connections are accepted only from the served address unless ``allow_websocket_origin``
    names more (never ``*`` by default). With ``auth`` (:meth:`ServerAuth.from_options`) every
    page and websocket needs a login first, and sessions connect only to the operator's
    endpoints (:func:`login_settings`); ``ssl_certfile``/``ssl_keyfile`` serve HTTPS.
    """
    store = None
    credentials = None
    if demo:
        from dashboard.demo.store import start_demo_store

        store = start_demo_store(scale="full")
        settings = settings.with_overrides(
            endpoint=store.endpoint,
            allowed_endpoints=None if settings.allowed_endpoints is None else [store.endpoint])
        credentials = store.credentials
    deliveries = Deliveries()  # downloads to browsers (a login without areas)
    try:
        if auth is not None:
            settings = login_settings(settings, credentials)
        apps = _apps(settings, credentials, deliveries=deliveries, login=auth is not None)
        pn.serve(apps, show=show, **_server_kwargs(
            port=port, address=address,
            allow_websocket_origin=allow_websocket_origin, prefix=prefix, auth=auth,
            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, deliveries=deliveries))
    finally:
        if store is not None:
            store.stop()


if __name__.startswith("bokeh_app"):  # panel serve dashboard/app.py
    create_app().servable(title=TITLE)
