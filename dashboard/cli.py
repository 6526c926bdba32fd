"""``echo-s3-viewer``: serve the dashboard, list, download, inspect and process from the shell.

Every failure prints one line ``error: ...`` on stderr and exits 1 (usage errors exit 2);
a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence

from . import __version__
from .config import ENV_SERVER_KEYS, ENV_USER_ROOT, Settings
from .errors import EchoError

log = logging.getLogger("dashboard")


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--endpoint", action="append",
                       help="S3 endpoint URL (env ECHO_S3_ENDPOINT; default ECHO); serve: repeat "
                            "it to offer several (see --allowed-endpoints)")
    group.add_argument(
        "--credentials", metavar="FILE",
        help='JSON key file {"access_key": ..., "secret_key": ...} (env ECHO_S3_CREDENTIALS)',
    )
    group.add_argument("--profile", help="AWS profile name (env AWS_PROFILE)")
    group.add_argument("--demo", action="store_true",
                       help="use the embedded demo S3 store (buckets echo-demo, echo-demo-empty; "
                            "no keys needed)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def _at_least_one(text: str) -> int:
    """argparse type: a whole number >= 1 (counts and limits)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-frame-pixels", type=_at_least_one, metavar="N",
                        help="refuse frames with more pixels, before reading them (env "
                             "ECHO_S3_MAX_FRAME_PIXELS; default 67108864 = 8192×8192)")


def _port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535 (got {value})")
    return value


def _login_options(parser: argparse.ArgumentParser) -> None:
    """``serve``: Panel's basic auth / OAuth and HTTPS (see README, Hosting with a login)."""
    group = parser.add_argument_group(
        "login (hosting outside JupyterHub)",
        "Secrets are better given through the environment variables than on the command line, "
        "where other users of the machine can see them (ps).")
    group.add_argument("--basic-auth", metavar="PASSWORD|FILE.json",
                       help='one shared password, or a JSON file {"user": "password", ...} '
                            "(env ECHO_S3_BASIC_AUTH)")
    group.add_argument("--cookie-secret", metavar="SECRET",
                       help="signs the login cookie, >= 32 characters; required with a login "
                            "(env ECHO_S3_COOKIE_SECRET or PANEL_COOKIE_SECRET)")
    group.add_argument("--oauth-provider", metavar="NAME",
                       help="Panel OAuth provider: github, gitlab, azure, google, okta, generic, ... "
                            "(env PANEL_OAUTH_PROVIDER)")
    group.add_argument("--oauth-key", metavar="CLIENT_ID", help="OAuth client id (env PANEL_OAUTH_KEY)")
    group.add_argument("--oauth-secret", metavar="SECRET",
                       help="OAuth client secret (env PANEL_OAUTH_SECRET)")
    group.add_argument("--oauth-redirect-uri", metavar="URL",
                       help="the public URL the provider sends users back to, e.g. https://host/login "
                            "(env PANEL_OAUTH_REDIRECT_URI)")
    group.add_argument("--oauth-extra-params", metavar="JSON",
                       help='provider settings as a JSON object, e.g. \'{"tenant": "..."}\' '
                            "(env PANEL_OAUTH_EXTRA_PARAMS)")
    group.add_argument("--oauth-encryption-key", metavar="KEY",
                       help="encrypts OAuth tokens in cookies; make one with 'panel oauth-secret' "
                            "(env PANEL_OAUTH_ENCRYPTION)")
    group.add_argument("--login-template", metavar="FILE.html", help="Jinja2 login page")
    group.add_argument("--logout-template", metavar="FILE.html", help="Jinja2 logout page")
    group.add_argument("--user-root", metavar="/srv/echo/{user}",
                       help="with a login: each user's own area for downloads and outputs, "
                            "{user} being the login (env ECHO_S3_USER_ROOT); without it, "
                            "downloads go to the browser and outputs to s3:// only")
    group.add_argument("--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    group.add_argument("--ssl-keyfile", metavar="FILE", help="its private key (PEM, no passphrase)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _common(common)
    parser = argparse.ArgumentParser(
        prog="echo-s3-viewer",
        description="Browse, inspect, view and process HDF5 image stacks on S3 (STFC ECHO).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="start the dashboard in the browser")
    p.add_argument("--port", type=_port, default=5006, help="port (default 5006; 0 = any free port)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--show", action="store_true", help="open the page in a web browser")
    p.add_argument("--allow-websocket-origin", action="append", metavar="HOST[:PORT]",
                   help="extra websocket origin to accept (repeatable); none beyond localhost by default")
    p.add_argument("--prefix", help="URL prefix when served behind a proxy (e.g. JupyterHub)")
    p.add_argument("--max-objects", type=_at_least_one, help="listing limit (env ECHO_S3_MAX_OBJECTS; default 5000)")
    _budget_option(p)
    p.add_argument("--server-keys", action=argparse.BooleanOptionalAction, default=None,
                   help="let sessions use keys found on the server: a typed key-file path, the "
                        "environment, AWS profiles (env ECHO_S3_SERVER_KEYS; default: yes, but "
                        "no with a login, where the server is shared)")
    p.add_argument("--allowed-endpoints", metavar="URL,URL",
                   help="the only endpoints sessions may connect to, offered as a choice (env "
                        "ECHO_S3_ALLOWED_ENDPOINTS); with a login the default is the --endpoint "
                        "values, else the configured endpoint only")
    _login_options(p)

    p = sub.add_parser("ls", parents=[common], help="list buckets, or objects under s3://BUCKET/PREFIX")
    p.add_argument("url", nargs="?", default="s3://", help="s3://BUCKET[/PREFIX] (omit to list buckets)")
    p.add_argument("--limit", type=_at_least_one, help="stop after N objects (default 5000)")
    p.add_argument("--all", action="store_true", help="all objects, not only HDF5 files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("download", parents=[common], help="download objects into a local folder")
    p.add_argument("urls", nargs="+", metavar="s3://BUCKET/KEY", help="objects to fetch")
    p.add_argument("--out", required=True, metavar="DIR", help="target folder")
    p.add_argument("--workers", type=_at_least_one, default=4, help="parallel downloads (default 4)")

    p = sub.add_parser("info", parents=[common], help="show an HDF5 file's tree and default stack")
    p.add_argument("url", help="s3://BUCKET/KEY or a local path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--values", action="store_true",
                   help="also each dataset's value: small ones whole, larger ones a bounded "
                        "preview (at most 1 MiB read each), odd types a one-line reason")

    p = sub.add_parser("process", parents=[common], help="run the processing pipeline over frames")
    p.add_argument("url", help="s3://BUCKET/KEY or a local path")
    p.add_argument("--dataset", help="dataset path (default: the detected image stack)")
    p.add_argument("--start", type=int,
                   help="first frame (default: 20 with the flat of the frames before Start, "
                        "which needs >= 20; else 0)")
    p.add_argument("--end", type=int, help="last frame, inclusive (default: the last frame)")
    p.add_argument("--step", type=int, default=1, help="every STEP-th frame (default 1)")
    p.add_argument("--sigma", type=float, default=4.0, help="Gaussian sigma in pixels (default 4.0)")
    p.add_argument("--flat", default="before-start", metavar="before-start|file|key:PATH|s3://…",
                   help="the flat field: the mean of the 20 frames before Start (default), the "
                        "file's own (Data Exchange data_white), a dataset of the file, or "
                        "another file (s3://BUCKET/KEY or a path, #PATH for its dataset)")
    p.add_argument("--flat-interpolate", action="store_true",
                   help="with an NXtomo image key: interpolate the flats taken before and "
                        "after the scan by each frame's position (default: average them all)")
    p.add_argument("--dark", default="none", metavar="none|file|key:PATH|s3://…",
                   help="the dark field, from the same choices (default none); with a dark, "
                        "frames become (I - D) / max(F - D, 1e-6)")
    p.add_argument("--format", choices=("png", "tiff", "npy"), default="png", help="output format")
    p.add_argument("--out", required=True, metavar="DIR|s3://BUCKET/PREFIX", help="output folder")
    p.add_argument("--scheduler", metavar="ADDRESS|local",
                   help="run on a Dask cluster (env DASK_SCHEDULER_ADDRESS); 'local' starts one")
    p.add_argument("--workers", type=_at_least_one, help="threads (local) or workers (LocalCluster)")
    p.add_argument("--resume", action="store_true",
                   help="skip frames whose outputs are complete (default when the last run was cut short)")
    _budget_option(p)
    p.add_argument("--png-level", type=int, default=1, choices=range(0, 10), metavar="0-9",
                   help="PNG compression level (default 1: fast, ~1.4x larger than 9)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.debug:
        from .storage.redact import install_log_redaction

        install_log_redaction()  # before any library logs a request
    else:
        logging.getLogger("dashboard").setLevel(logging.INFO)
    handler = globals()[f"_cmd_{args.command}"]
    if args.demo and (args.endpoint or args.credentials or args.profile
                      or getattr(args, "allowed_endpoints", None)):
        parser.error("--demo uses the demo store's own endpoint and keys: "
                     "drop --endpoint, --allowed-endpoints, --credentials and --profile")
    if args.command != "serve" and len(args.endpoint or []) > 1:
        parser.error("give --endpoint once (only serve offers several)")
    try:
        with _demo_store(args):
            return handler(args) or 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except EchoError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the last line of defence: one line, no secrets
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {_scrubbed(exc, args)} "
              "(run again with --debug for details)", file=sys.stderr)
        return 1


# -- helpers -------------------------------------------------------------------------------


def _settings(args) -> Settings:
    return Settings.from_env(
        endpoint=(args.endpoint or [None])[0],
        credentials_path=args.credentials,
        profile=args.profile,
        max_objects=getattr(args, "max_objects", None) or getattr(args, "limit", None),
        max_frame_pixels=getattr(args, "max_frame_pixels", None),
    )


@contextlib.contextmanager
def _demo_store(args):
    """``--demo`` (all commands but ``serve``, which starts its own): the embedded demo store
    runs for the command's lifetime; :func:`_connect` then uses its endpoint and keys."""
    args.demo_store = None
    if not args.demo or args.command == "serve":
        yield
        return
    from .demo.store import start_demo_store

    if not args.debug:
        logging.getLogger("dashboard.demo").setLevel(logging.WARNING)
    print("Starting the demo S3 store (the first start generates its data, ~10 s)...",
          file=sys.stderr, flush=True)
    with start_demo_store(scale="full") as store:
        args.demo_store = store
        yield


def _connect(args):
    from .storage.credentials import load_credentials
    from .storage.s3 import S3

    settings = _settings(args)
    if args.demo_store is not None:
        return settings, S3(args.demo_store.endpoint, args.demo_store.credentials)
    credentials = load_credentials(settings.credentials_path, profile=settings.profile)
    # The one rule (config.resolve_endpoint): --endpoint or env, else the key file's, else ECHO.
    return settings, S3(settings.endpoint_for(credentials), credentials)


def _scrubbed(exc: BaseException, args) -> str:
    text = str(exc)
    try:
        from .storage.credentials import load_credentials

        settings = _settings(args)
        text = load_credentials(settings.credentials_path, profile=settings.profile).scrub(text)
    except Exception:
        pass
    return text


def _human(n: int) -> str:
    from .storage.listing import human_size

    return human_size(n)


# -- commands ------------------------------------------------------------------------------


_AUTH_OPTIONS = ("basic_auth", "cookie_secret", "oauth_provider", "oauth_key", "oauth_secret",
                 "oauth_redirect_uri", "oauth_extra_params", "oauth_encryption_key",
                 "login_template", "logout_template")


def _cmd_serve(args) -> int:
    from .app import ServerAuth, serve
    from .storage.area import check_user_root

    try:  # before anything starts: a bad login or endpoint setting is a usage error (exit 2)
        auth = ServerAuth.from_options(**{name: getattr(args, name) for name in _AUTH_OPTIONS})
        _check_ssl(args.ssl_certfile, args.ssl_keyfile)
        user_root = check_user_root(args.user_root or os.environ.get(ENV_USER_ROOT),
                                    login=auth is not None)
        settings = _settings(args).with_overrides(
            user_root=user_root,
            allowed_endpoints=_allowed_endpoints(args, login=auth is not None))
    except EchoError as exc:
        print(f"echo-s3-viewer serve: error: {exc}", file=sys.stderr)
        return 2
    if args.server_keys is not None:
        settings = settings.with_overrides(server_keys=args.server_keys)
    elif auth is not None and not os.environ.get(ENV_SERVER_KEYS):
        settings = settings.with_overrides(server_keys=False)  # shared: the keys are not theirs
    serve(
        auth=auth,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        settings=settings,
        demo=args.demo,
        port=args.port,
        address=args.address,
        show=args.show,
        allow_websocket_origin=args.allow_websocket_origin,
        prefix=args.prefix,
    )
    return 0


def _allowed_endpoints(args, *, login: bool) -> list[str] | None:
    """The endpoints of ``--endpoint`` (repeated) and ``--allowed-endpoints``, first given
    first: the only ones sessions may use with a login, with ``--allowed-endpoints`` or with
    several ``--endpoint`` (else ``None``: one endpoint, typed freely; with a login, the app
    then allows the configured endpoint only)."""
    extra = [u for u in (args.allowed_endpoints or "").split(",") if u.strip()]
    if args.allowed_endpoints is not None and not extra:
        raise EchoError("--allowed-endpoints lists no endpoint.")
    listed = [*(args.endpoint or []), *extra]
    if listed and (login or extra or len(args.endpoint or []) > 1):
        return listed
    return None


def _check_ssl(certfile: str | None, keyfile: str | None) -> None:
    from pathlib import Path

    from .errors import ConfigError

    if keyfile and not certfile:
        raise ConfigError("--ssl-keyfile needs --ssl-certfile.")
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{flag}: no such file: {path}")


def _cmd_ls(args) -> int:
    from .storage.listing import filter_objects
    from .storage.s3 import parse_s3_url

    settings, s3 = _connect(args)
    if args.url.rstrip("/") in ("s3:", "s3:/", ""):
        buckets = s3.list_buckets()
        if args.json:
            print(json.dumps(buckets))
        else:
            for name in buckets:
                print(name)
        return 0
    bucket, prefix = parse_s3_url(args.url)
    listing = s3.list_objects(bucket, prefix, limit=args.limit or settings.max_objects)
    objects = filter_objects(listing.objects, hdf5_only=not args.all)
    if args.json:
        print(json.dumps([o.to_json() for o in objects], indent=1))
    else:
        for o in objects:
            print(f"{_human(o.size):>10}  {o.last_modified.astimezone():%Y-%m-%d %H:%M}  {o.key}")
        shown = "HDF5 objects" if not args.all else "objects"
        print(f"{len(objects)} {shown}", file=sys.stderr)
    if listing.truncated:
        print(f"note: {listing.notice} (raise --limit to see more)", file=sys.stderr)
    return 0


def _cmd_download(args) -> int:
    from .storage.download import download_objects
    from .storage.s3 import parse_s3_url

    _, s3 = _connect(args)
    by_bucket: dict[str, list[str]] = {}
    for url in args.urls:
        bucket, key = parse_s3_url(url)
        by_bucket.setdefault(bucket, []).append(key)
    failed = 0
    printer = _LinePrinter()
    for bucket, keys in by_bucket.items():
        report = download_objects(
            s3, bucket, keys, args.out, progress=printer.download, max_workers=args.workers
        )
        printer.done()
        for result in report.results:
            print(f"{result.status:>10}  {result.key}" + (f": {result.message}" if result.message else ""),
                  file=sys.stderr)
        failed += len(report.failed)
    if failed:
        raise EchoError(f"{failed} of {len(args.urls)} downloads failed (see above).")
    return 0


def _cmd_info(args) -> int:
    from .hdf5.describe import describe, format_tree

    s3 = _connect(args)[1] if args.url.startswith("s3://") else None
    description = describe(args.url, s3=s3, values=args.values)
    if args.json:
        print(json.dumps(description, indent=1, default=str))
    else:
        print(format_tree(description))
    return 0


def _cmd_process(args) -> int:
    from .processing.batch import plan_batch, resolve_scheduler, run_batch

    remote = [args.url, args.out, args.flat, args.dark]
    s3 = _connect(args)[1] if any(str(v).startswith("s3://") for v in remote) else None
    scheduler = resolve_scheduler(args.scheduler)
    start = args.start if args.start is not None else 20 if args.flat == "before-start" else 0
    with _open_in_budget(args, s3) as stack:
        plan = plan_batch(
            stack, dataset=args.dataset, start=start, end=args.end, step=args.step,
            sigma=args.sigma, fmt=args.format, out=args.out, s3=s3, png_level=args.png_level,
            resume=True if args.resume else None,  # None: resume when the last run was incomplete
            flat=args.flat, dark=args.dark, flat_interpolate=args.flat_interpolate,
        )
        printer = _LinePrinter()
        cancel = threading.Event()
        try:
            result = run_batch(plan, progress=printer.batch, cancel=cancel, scheduler=scheduler,
                               workers=args.workers)
        except KeyboardInterrupt:
            cancel.set()
            raise
        finally:
            printer.done()
    print(result.summary, file=sys.stderr)
    return 0 if result.ok else 1


def _open_in_budget(args, s3):
    """The stack to process; a frame over the pixel budget is refused before it is read."""
    from .hdf5.errors import TooLarge
    from .hdf5.stack import open_stack

    try:
        return open_stack(args.url, args.dataset, s3=s3 if args.url.startswith("s3://") else None,
                          prefetch=False, max_frame_pixels=_settings(args).max_frame_pixels)
    except TooLarge as exc:
        raise EchoError(f"{exc.what} is over the frame budget of {exc.limit} pixels: on a "
                        "machine with enough memory, raise it with --max-frame-pixels.") from None


class _LinePrinter:
    """Progress on stderr: an updating bar on a terminal, a plain line every ~10% otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_bucket = -1
        self._open = False

    def _emit(self, fraction: float, text: str) -> None:
        if self.tty:
            width = 30
            filled = int(width * fraction)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} {text}\x1b[K")
            self.stream.flush()
            self._open = True
            return
        bucket = int(fraction * 10)
        if bucket != self._last_bucket:
            self._last_bucket = bucket
            print(f"{fraction:6.1%} {text}", file=self.stream, flush=True)

    def download(self, p) -> None:
        fraction = p.bytes_done / p.bytes_total if p.bytes_total else 1.0
        self._emit(fraction, f"{p.files_done}/{p.files_total} files, "
                             f"{_human(p.bytes_done)} of {_human(p.bytes_total)}")

    def batch(self, p) -> None:
        fraction = p.done / p.total if p.total else 1.0
        eta = f", ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
        self._emit(fraction, f"{p.done}/{p.total} frames, {p.frames_per_s:.1f} frames/s{eta}")

    def done(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
