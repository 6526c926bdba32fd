"""Connect, list, filter, sort, select and download objects: the Browse step's state.

No Panel import here: set parameters, trigger the ``param.Event`` actions, read the results.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import param

from ..config import DEFAULT_ENDPOINT, DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_OBJECTS
from ..storage.credentials import (
    Credentials, CredentialsError, from_json_file, from_json_text, load_credentials, mask,
)
from ..storage.listing import HDF5_SUFFIXES, SORT_KEYS, directories, filter_objects, sort_objects
from ..storage.area import UserArea
from ..storage.paths import UnusablePath, local_path
from ..storage.s3 import S3
from ..text import labels
from .provider import Provider, connect
from .tasks import Tasks, user_message

log = logging.getLogger(__name__)

ALL_DIRECTORIES = "(all)"


def default_download_dir() -> str:
    """``<user downloads>/echo-s3`` (platformdirs), the default target of "Download Selected"."""
    from platformdirs import user_downloads_dir

    return str(Path(user_downloads_dir()) / "echo-s3")


class BrowserState(param.Parameterized):
    """Connection, listing and selection of one session.

    Once connected, :attr:`provider` (a plain attribute, not a parameter) is the session's one
    way to the data (:mod:`dashboard.state.provider`); the secret key only ever lives in it and
    in the boto3 clients built from it. Pasted or uploaded keys (:attr:`credentials_text`) are
    cleared as soon as "Connect" reads them.

    :attr:`endpoint` is the endpoint *given* (CLI, environment or typed); empty means the key
    file's ``"endpoint"``, else ECHO (:func:`~dashboard.config.resolve_endpoint`).
    """

    # -- connect -----------------------------------------------------------------------------
    endpoint = param.String(default="", label="Endpoint",
                            doc=f"Empty: the key file's endpoint, else {DEFAULT_ENDPOINT}.")
    allowed_endpoints = param.List(
        default=[], item_type=str, constant=True, precedence=-1,
        doc="The only endpoints Connect may use (the operator's list on a shared server, shown "
            "as a choice); empty: any (Settings.allowed_endpoints).")
    credentials_path = param.String(default="", label="Credentials file (on the server)")
    server_keys = param.Boolean(
        default=True, constant=True, precedence=-1,
        doc="May Connect use keys found on the server (a typed key-file path, the server's "
            "environment, AWS profiles)? Off on shared servers (Settings.server_keys).")
    credentials_text = param.String(
        default="", label="…or paste keys (JSON)", precedence=-1,
        doc="Pasted/uploaded key JSON; cleared by connect(), never logged or shown again.",
    )
    connect = param.Event(label="Connect")
    connected = param.Boolean(default=False, constant=True)
    connection = param.String(default="", constant=True, doc="Who is connected where (no keys).")
    status = param.String(default="Not connected: give an endpoint and keys, then press Connect.")
    busy = param.Boolean(default=False, doc="An action of this step is running.")
    failed = param.Boolean(default=False, precedence=-1,
                           doc="`status` reports an error (views style it so).")

    # -- list --------------------------------------------------------------------------------
    bucket = param.Selector(default=None, objects=[], label="Bucket")
    list_objects = param.Event(label="List Objects")
    listing = param.List(default=[], precedence=-1, doc="Every object of the last listing.")
    truncated_notice = param.String(default="")
    directory = param.Selector(default="", objects={ALL_DIRECTORIES: ""}, label="Directory")
    keyword = param.String(default="", label="Keyword")
    sort_by = param.Selector(default="name", objects=list(SORT_KEYS), label="Sort by")
    descending = param.Boolean(default=False, label="Descending")
    hdf5_only = param.Boolean(default=True, label="HDF5 files only")
    max_objects = param.Integer(default=DEFAULT_MAX_OBJECTS, bounds=(1, None), precedence=-1)

    # -- select, download, thumbnail -----------------------------------------------------
    selection = param.List(default=[], doc="Selected object keys, in the order selected.")
    server_folders = param.Boolean(
        default=True, constant=True, precedence=-1,
        doc="Downloads go to a folder on the server (inside the user's area with --user-root). "
            "False on a shared server without areas: they go to the user's browser.")
    delivery = param.String(default="", precedence=-1,
                            doc="The address the page fetches the last browser download from.")
    download_dir = param.String(default="", label="Download folder (on the server)")
    download = param.Event(label="Download Selected")
    cancel_download = param.Event(label="Cancel download")
    download_progress = param.Integer(default=0, bounds=(0, 100), doc="Percent done.")
    download_status = param.String(default="")
    download_failed = param.Boolean(default=False, precedence=-1,
                                    doc="`download_status` reports an error.")
    downloading = param.Boolean(default=False)
    view_last_frame = param.Event(label="View Last Frame")
    thumbnail = param.Parameter(default=None, precedence=-1, doc="Last frame (2-D ndarray).")
    thumbnail_title = param.String(default="")
    max_frame_pixels = param.Integer(default=DEFAULT_MAX_FRAME_PIXELS, bounds=(1, None),
                                     precedence=-1, doc="The session's pixel budget per frame.")

    def __init__(self, *, tasks: Tasks | None = None, area: UserArea | None = None,
                 deliveries=None, user: str | None = None, **params):
        if area is not None or not params.get("server_folders", True):
            params.setdefault("download_dir", "downloads" if area is not None else "")
        params.setdefault("download_dir", default_download_dir())
        super().__init__(**params)
        #: The user's area on a shared server (download folders are relative to it), the
        #: server's :class:`~.deliveries.Deliveries` (downloads to the browser), the login.
        self.area, self.deliveries, self.user = area, deliveries, user
        if area is not None:
            self.param.download_dir.label = "Download folder (in your area)"
        self.tasks = tasks or Tasks()
        self.provider: Provider | None = None
        self._credentials: Credentials | None = None
        self._download_cancel = threading.Event()
        self._generation = 0  # bumped on connect: results of older listings are dropped

    # -- derived values -----------------------------------------------------------------------

    @param.depends("listing", "directory", "keyword", "sort_by", "descending", "hdf5_only")
    def objects(self) -> list:
        """The listing, filtered by directory/keyword/HDF5-only and sorted."""
        kept = filter_objects(
            self.listing, directory=self.directory or "", keyword=self.keyword,
            hdf5_only=self.hdf5_only,
        )
        return sort_objects(kept, by=self.sort_by, descending=self.descending)

    @param.depends("listing", "directory", "keyword", "sort_by", "descending", "hdf5_only",
                   "truncated_notice", "selection")
    def count_text(self) -> str:
        """``"12 of 40 objects shown, 1 selected"`` plus the truncation notice."""
        if not self.listing:
            return "No objects listed yet." if not self.bucket else ""
        text = f"{len(self.objects())} of {len(self.listing)} objects shown"
        if self.selection:
            text += f", {len(self.selection)} selected"
        if self.truncated_notice:
            text += f" ({self.truncated_notice})"
        return text

    @property
    def s3(self) -> S3 | None:
        """The provider's S3 connection (``s3://`` outputs, downloads); ``None`` if offline."""
        return self.provider.s3 if self.provider is not None else None

    def selected_hdf5(self) -> str | None:
        """The first selected HDF5 key, or ``None``."""
        for key in self.selection:
            if key.lower().endswith(HDF5_SUFFIXES):
                return key
        return None

    def selected_url(self) -> str | None:
        key = self.selected_hdf5()
        return f"s3://{self.bucket}/{key}" if key and self.bucket else None

    # -- actions --------------------------------------------------------------------------

    @param.depends("connect", watch=True)
    def _on_connect(self) -> None:
        text, self.credentials_text = self.credentials_text, ""  # never keep pasted keys around
        self._set_busy("Connecting…")
        self.tasks.submit(self._connect, text)

    def connect_now(self, credentials: Credentials | None = None,
                    endpoint: str | None = None, *, provider: Provider | None = None) -> None:
        """Connect with ready-made keys (``serve --demo``, ``--credentials``) in the background,
        or use a ready ``provider`` (e.g. :class:`~dashboard.state.provider.MemoryProvider`)."""
        if endpoint:
            self.endpoint = endpoint
        self._set_busy("Connecting…")
        if provider is not None:
            self.tasks.submit(self._use, provider)
        else:
            self.tasks.submit(self._connect, "", credentials)

    def _use(self, provider: Provider) -> None:
        self._generation += 1
        try:
            buckets = provider.buckets()
        except Exception as exc:  # noqa: BLE001 - action boundary
            self.tasks.post(self._disconnect, f"Not connected: {user_message(exc, 'connect')}")
            return
        self.tasks.post(self._connected, provider, None, buckets)

    def _connect(self, text: str, credentials: Credentials | None = None) -> None:
        self._generation += 1
        try:
            if credentials is None:
                if text.strip():
                    credentials = from_json_text(text, origin="the pasted keys")
                elif not self.server_keys:
                    raise CredentialsError(
                        "This server uses only keys given in the page: paste or upload your "
                        "key file, then press Connect.")
                elif self.credentials_path.strip():
                    credentials = from_json_file(self.credentials_path.strip())
                else:
                    credentials = load_credentials()
            provider, buckets = connect(credentials, endpoint=self.endpoint.strip() or None,
                                        allowed=self.allowed_endpoints)
        except Exception as exc:  # noqa: BLE001 - action boundary
            message = user_message(exc, "connect")
            if credentials is not None:
                message = credentials.scrub(message)
            self.tasks.post(self._disconnect, f"Not connected: {message}")
            return
        del text
        self.tasks.post(self._connected, provider, credentials, buckets)

    def _connected(self, provider: Provider, credentials: Credentials | None,
                   buckets: list[str]) -> None:
        endpoint = provider.endpoint
        if self.provider is not None and self.provider is not provider:
            self.provider.close()
        self.provider, self._credentials = provider, credentials
        provider.max_frame_pixels = self.max_frame_pixels
        if credentials is None:
            who = "in-memory files"
        else:
            who = (f"keys {mask(credentials.access_key)}" if credentials.access_key
                   else credentials.source)
        self.param.bucket.objects = labels(buckets)  # shown as text, values unchanged
        self.param.update(
            bucket=buckets[0] if buckets else None,
            listing=[],
            truncated_notice="",
            selection=[],
            thumbnail=None,
            thumbnail_title="",
        )
        with param.edit_constant(self):
            self.param.update(connected=True, connection=f"{endpoint} with {who}")
        found = f"{len(buckets)} bucket{'s' if len(buckets) != 1 else ''}"
        hint = ("choose a bucket and press List Objects." if buckets
                else "these keys see no buckets.")
        self._done(f"Connected to {endpoint}: {found}; {hint}")

    def _disconnect(self, message: str) -> None:
        if self.provider is not None:
            self.provider.close()
        self.provider, self._credentials = None, None
        self.param.bucket.objects = []
        self.param.update(bucket=None, listing=[], selection=[], thumbnail=None,
                          truncated_notice="")
        with param.edit_constant(self):
            self.param.update(connected=False, connection="")
        self._done(message, failed=True)

    @param.depends("bucket", watch=True)
    def _on_bucket(self) -> None:
        # A new bucket invalidates the listing of the old one.
        self._set_directories([])
        self.param.update(listing=[], selection=[], truncated_notice="", thumbnail=None,
                          thumbnail_title="")

    @param.depends("list_objects", watch=True)
    def _on_list(self) -> None:
        if not self._require_connection():
            return
        if not self.bucket:
            self._refuse("Choose a bucket first.")
            return
        self._set_busy(f"Listing s3://{self.bucket}/ …")
        self.tasks.submit(self._list, self.provider, self.bucket, self._generation)

    def _list(self, provider: Provider, bucket: str, generation: int) -> None:
        try:
            listing = provider.list_objects(bucket, limit=self.max_objects)
        except Exception as exc:  # noqa: BLE001
            self._done(user_message(exc, f"list bucket {bucket!r}"), failed=True)
            return
        self.tasks.post(self._listed, listing, bucket, generation)

    def _listed(self, listing, bucket: str, generation: int) -> None:
        if generation != self._generation or bucket != self.bucket:
            self.busy = False
            return  # the user reconnected or switched buckets meanwhile
        self._set_directories(directories(listing.objects))
        self.param.update(listing=list(listing.objects), truncated_notice=listing.notice,
                          selection=[])
        hdf5 = sum(1 for o in listing.objects if o.is_hdf5)
        self._done(
            f"Listed {len(listing.objects)} objects in s3://{bucket}/ ({hdf5} HDF5)"
            + (f"; {listing.notice}" if listing.notice else "")
            + ". Tick files to download, or select one .h5 file to view it."
        )

    def _set_directories(self, names: list[str]) -> None:
        options = {ALL_DIRECTORIES: ""}
        options.update(labels(names))
        keep = self.directory if self.directory in options.values() else ""
        self.param.directory.objects = options
        self.directory = keep

    @param.depends("download", watch=True)
    def _on_download(self) -> None:
        if not self._require_connection():
            return
        if not self.selection:
            self._refuse_download("Tick one or more objects in the table first.")
            return
        if self.downloading:
            self._refuse_download("A download is already running.")
            return
        self._download_cancel.clear()
        if not self.server_folders:
            from .deliveries import offer_selection

            offer_selection(self)  # to the user's browser
            return
        text = self.download_dir.strip()
        if not text and self.area is None:
            self._refuse_download("Give a download folder first.")
            return
        try:
            out_dir = (self.area.resolve(text, what="download folder", example="downloads")
                       if self.area is not None else local_path(text, what="download folder"))
        except UnusablePath as exc:
            self._refuse_download(str(exc))
            return
        self.param.update(downloading=True, download_progress=0, download_failed=False,
                          download_status=f"Downloading {len(self.selection)} object(s)…")
        self.tasks.submit(self._download, self.s3, self.bucket, list(self.selection),
                          text if self.area is not None else out_dir)

    @param.depends("cancel_download", watch=True)
    def _on_cancel_download(self) -> None:
        if self.downloading:
            self._download_cancel.set()
            self.param.update(download_status="Cancelling the download…", download_failed=False)
            if self.deliveries is not None and self.deliveries.withdraw(self):
                self.param.update(downloading=False, download_status="Download cancelled.")

    def _download(self, s3: S3, bucket: str, keys: list[str], out_dir) -> None:
        from ..storage.download import download_objects

        def progress(p) -> None:
            self.tasks.post(
                self.param.update,
                download_progress=int(100 * p.fraction),
                download_status=f"Downloading {p.files_done}/{p.files_total} done"
                + (f": {p.key}" if p.key else ""),
            )

        try:
            report = download_objects(s3, bucket, keys, out_dir, progress=progress,
                                      cancel=self._download_cancel, area=self.area)
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self.param.update, downloading=False, download_failed=True,
                            download_status=user_message(exc, "download the selection"))
            return
        self.tasks.post(
            self.param.update,
            downloading=False,
            download_progress=100 if not self._download_cancel.is_set() else self.download_progress,
            download_status=_download_summary(
                report, self.area.shown(report.out_dir) + " (in your area)"
                if self.area is not None else out_dir, self._download_cancel.is_set()),
            download_failed=bool(report.failed),
        )

    @param.depends("view_last_frame", watch=True)
    def _on_view_last_frame(self) -> None:
        if not self._require_connection():
            return
        url = self.selected_url()
        if url is None:
            self._refuse("Select an .h5 file in the browser first.")
            return
        self._set_busy(f"Reading the last frame of {url} …")
        self.tasks.submit(self._thumbnail, self.provider, url)

    def _thumbnail(self, provider: Provider, url: str) -> None:
        try:
            with provider.stack(url) as stack:  # its own handle: Inspect's stays for Load
                frame = stack.last_frame()
                title = f"{url.rsplit('/', 1)[-1]} — frame {len(stack) - 1} of {stack.dataset}"
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self.param.update, thumbnail=None, thumbnail_title="")
            self._done(user_message(exc, f"read the last frame of {url}"), failed=True)
            return
        self.tasks.post(self.param.update, thumbnail=frame, thumbnail_title=title)
        self._done(f"Last frame of {url} shown ({frame.shape[1]}×{frame.shape[0]}).")

    # -- helpers --------------------------------------------------------------------------

    def _require_connection(self) -> bool:
        if self.provider is None:
            self._refuse("Connect first: give an endpoint and keys, then press Connect.")
            return False
        return True

    def _set_busy(self, message: str) -> None:
        self.param.update(busy=True, status=message, failed=False)

    def _done(self, message: str, *, failed: bool = False) -> None:
        self.tasks.post(self.param.update, busy=False, status=message, failed=failed)

    def _refuse_download(self, message: str) -> None:
        self.param.update(download_status=message, download_failed=True)

    def _refuse(self, message: str) -> None:
        """An action that cannot start: say why, as an error, replacing the last message."""
        self.param.update(status=message, failed=True)

    def close(self) -> None:
        """Cancel a running download, release the provider (the session is going away)."""
        self._download_cancel.set()
        if self.deliveries is not None:
            self.deliveries.withdraw(self)
        if self.provider is not None:
            self.provider.close()


def _download_summary(report, out_dir, cancelled: bool) -> str:
    text = report.summary()
    failed = report.failed
    if failed:
        first = failed[0].message.rstrip()
        text += f" First failure: {first}{'' if first.endswith('.') else '.'}"
    if cancelled or report.cancelled:
        prefix = "Download cancelled: "
    elif failed and not report.downloaded and not report.skipped:
        return f"Download failed: {text}"  # nothing is in the folder: don't point at it
    else:
        prefix = "Download finished: "
    return f"{prefix}{text} Files are in {out_dir}"
