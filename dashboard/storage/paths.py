"""Paths typed by a user (key file, download folder, output folder): usable, or one clear sentence.

The operating system's own errors for such paths are unhelpful ("embedded null byte", "File name
too long") and would surface as "unexpected ValueError"; these checks name the problem first.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EchoError
from ..text import shown  # a bad path repeated in a message: bidi-safe, shortened

MAX_NAME_BYTES = 255  # one path component (ext4, XFS, APFS, NTFS)
MAX_PATH_BYTES = 4095  # a whole path (Linux PATH_MAX - 1)


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


def open_temp(path: Path, *, marker: str = ".part-"):
    """Create ``.NAME<marker>RANDOM`` beside ``path`` for an atomic write, and open it.

    Mode ``0666 & ~umask``, like any file the user creates (``tempfile.mkstemp`` would make it
    ``0600``, which colleagues on shared storage cannot read). Returns ``(temp path, binary
    file)``; write, close, then ``os.replace(temp, path)``.
    """
    import secrets

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _attempt in range(100):
        tmp = path.with_name(f".{path.name}{marker}{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")
    raise FileExistsError(f"no free temporary name beside {path}")
