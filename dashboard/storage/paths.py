"""Paths typed by a user (key file, download folder, output folder): usable, or one clear sentence.

The operating system's own errors for such paths are unhelpful ("embedded null byte", "File name
too long") and would surface as "unexpected ValueError"; these checks name the problem first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import EchoError
from ..text import shown  # a bad path repeated in a message: bidi-safe, shortened

MAX_NAME_BYTES = 255  # one path component (ext4, XFS, APFS, NTFS)
MAX_PATH_BYTES = 4095  # a whole path (Linux PATH_MAX - 1)

log = logging.getLogger(__name__)


class UnusablePath(EchoError):
    """A path that no file system here could use."""


def local_path(text: str | os.PathLike, *, what: str) -> Path:
    """``text`` as an expanded local :class:`Path`, or :class:`UnusablePath` saying why not.

    Parameters
    ----------
    text : str or path
        What the user typed.
    what : str
        Its name in messages, e.g. ``"download folder"``.
    """
    raw = os.fspath(text)
    if not raw.strip():
        raise UnusablePath(f"No {what} given.")
    if "\x00" in raw:
        raise UnusablePath(f"The {what} contains a NUL character; type a plain path.")
    if raw.startswith("s3://"):
        raise UnusablePath(f"The {what} is a folder on the server, not an s3:// address "
                           f"(got {shown(raw)}).")
    path = Path(raw).expanduser()
    try:
        encoded = os.fsencode(path)
    except UnicodeError:
        raise UnusablePath(f"The {what} is not valid text for a file name: {shown(raw)}") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnusablePath(f"The {what} is too long ({len(encoded)} bytes; at most "
                           f"{MAX_PATH_BYTES}).")
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise UnusablePath(f"A folder or file name in the {what} is longer than "
                               f"{MAX_NAME_BYTES} bytes: {shown(part)}")
    return path


def open_temp(path: Path, *, marker: str = ".part-", dir_fd: int | None = None):
    """Create ``.NAME<marker>RANDOM`` beside ``path`` for an atomic write, and open it.

    Mode ``0666 & ~umask``, like any file the user creates (``tempfile.mkstemp`` would make it
    ``0600``, which colleagues on shared storage cannot read). ``O_EXCL | O_NOFOLLOW``: a name
    that exists already (a file, or a symbolic link planted there) is never opened, another
    name is drawn. With ``dir_fd`` the name is created in that open folder. Returns ``(temp
    path, binary file)``; write, close, then ``os.replace(temp, path)`` (or use
    :class:`AtomicFile`).
    """
    import secrets

    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_BINARY", 0))
    for _attempt in range(100):
        tmp = path.with_name(f".{path.name}{marker}{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp if dir_fd is None else tmp.name, flags, 0o666, dir_fd=dir_fd)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")
    raise FileExistsError(f"no free temporary name beside {path}")


class AtomicFile:
    """Write ``path`` whole or not at all: a temporary file beside it, renamed on :meth:`commit`.

    ``with AtomicFile(path) as out: out.file.write(...); out.commit()``. Leaving the block
    without :meth:`commit` (an error, a cancel, a failed check) removes the temporary file, so
    nothing incomplete is ever left under the final name. With ``area`` (a
    :class:`~dashboard.storage.area.UserArea`) the folders are made one level at a time inside
    it, and the folder is then held open (checked to be inside the area once open): the
    temporary file is created, renamed and removed relative to that open folder, so a folder
    swapped for a symbolic link meanwhile cannot send the write elsewhere. The rename
    (``os.replace``) replaces a symbolic link at the final name, never writes through it.
    """

    def __init__(self, path: Path, *, area=None, marker: str = ".part-"):
        self.path = Path(path)
        self.area = area
        self.marker = marker
        self.tmp: Path | None = None
        self.file = None
        self._dir: int | None = None

    def __enter__(self) -> AtomicFile:
        if self.area is not None:
            self._dir = self.area.open_folder(self.path.parent)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.tmp, self.file = open_temp(self.path, marker=self.marker, dir_fd=self._dir)
        except BaseException:
            self._close_dir()
            raise
        return self

    def commit(self) -> None:
        """Close the file and rename it into place."""
        self.file.close()
        if self._dir is None:
            os.replace(self.tmp, self.path)
        else:
            os.replace(self.tmp.name, self.path.name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        self.tmp = None

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()
        if self.tmp is not None:
            try:
                if self._dir is None:
                    self.tmp.unlink()
                else:
                    os.unlink(self.tmp.name, dir_fd=self._dir)
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("Could not remove the temporary file %s: %s", self.tmp,
                            error.strerror or type(error).__name__)
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir is not None:
            os.close(self._dir)
            self._dir = None
