"""Per-user areas on a shared server: the only place a logged-in user's files are written.

The operator grants ``serve --user-root /srv/echo/{user}``; ``{user}`` is the login name made
into one safe folder name (:func:`area_name`). A user then types *relative* paths (the
download folder, the output folder), and :meth:`UserArea.resolve` turns them into paths inside
the area, or refuses with one sentence and writes nothing: absolute paths, ``~``, ``..``, and
any existing component whose real path (``os.path.realpath``, symbolic links followed) is not
inside the area's real path. Folders are then made one level at a time (``mkdir`` never follows
a link at the name it creates; each level is checked again after it exists), files through
:class:`~dashboard.storage.paths.AtomicFile` (a temporary file opened ``O_EXCL | O_NOFOLLOW``,
checked again, then renamed).

Examples
--------
>>> area = UserArea.for_user("/srv/echo/{user}", "alice")              # doctest: +SKIP
>>> area.resolve("runs/2024", what="output folder")                   # doctest: +SKIP
PosixPath('/srv/echo/alice/runs/2024')
>>> area.resolve("../bob", what="output folder")                      # doctest: +SKIP
AreaError: Refused: the output folder must be a relative path inside your area (e.g. ...
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .paths import UnusablePath, local_path, shown

__all__ = ["AREA_MODE", "USER", "AreaError", "UserArea", "area_name", "check_user_root"]

USER = "{user}"  # the placeholder in --user-root
AREA_MODE = 0o700  # the area and the levels above it that name the user
MAX_AREA_NAME = 64  # characters of a login kept in the folder name
_KEPT = "._@+-"  # besides letters and digits (any script)


class AreaError(UnusablePath):
    """A path that is not inside the user's area (or the area cannot be used)."""


def area_name(user: str) -> str:
    """The login ``user`` as one safe folder name, distinct for distinct logins.

    Letters and digits of any script, ``.``, ``_``, ``@``, ``+`` and ``-`` are kept (NFC
    normalised); a name that needs any change (another character, a leading ``.`` or ``-``,
    more than 64 characters, empty) becomes its cleaned form, ``=`` and 12 hex digits of the
    login's SHA-256. A name kept as it is never contains ``=``, so a changed name cannot equal
    another user's unchanged one.
    """
    text = unicodedata.normalize("NFC", str(user))
    cleaned = "".join(c if (c.isalnum() and c.isprintable()) or c in _KEPT else "_" for c in text)
    if cleaned == text and text and text[0] not in ".-" and len(text) <= MAX_AREA_NAME:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned.lstrip('.-')[:MAX_AREA_NAME] or 'user'}={digest}"


def check_user_root(template: str | None, *, login: bool) -> str | None:
    """Check ``--user-root`` before the server starts; returns the absolute template.

    Creates the fixed folders above ``{user}`` (the operator's, with the default mode) and
    checks that the service can write there. Raises :class:`ConfigError` (one sentence):
    with a login the template must name ``{user}``; without one it must not (there is no
    user name to fill in); it must be an absolute path whose fixed part can be created.
    """
    if template is None or not str(template).strip():
        return None
    text = os.path.expanduser(str(template).strip())
    if "\x00" in text:
        raise ConfigError("--user-root contains a NUL character.")
    if not os.path.isabs(text):
        raise ConfigError(f"--user-root must be an absolute path such as /srv/echo/{USER} "
                          f"(got {shown(text)}).")
    if ".." in Path(text).parts:
        raise ConfigError(f"--user-root must not contain '..' (got {shown(text)}).")
    if login and USER not in text:
        raise ConfigError(f"--user-root must contain {USER} with a login, so that every user "
                          f"gets a folder of their own (e.g. /srv/echo/{USER}).")
    if not login and USER in text:
        raise ConfigError(f"--user-root names {USER}, which needs a login (--basic-auth or "
                          "--oauth-provider).")
    base = _fixed_part(Path(text))
    try:
        base.mkdir(parents=True, exist_ok=True)
        usable = base.is_dir() and os.access(base, os.W_OK | os.X_OK)
    except OSError as exc:
        raise ConfigError(f"--user-root: cannot create {shown(str(base))}: "
                          f"{exc.strerror or type(exc).__name__}.") from None
    if not usable:
        raise ConfigError(f"--user-root: {shown(str(base))} is not a folder this service "
                          "can write to.")
    return text


def _fixed_part(path: Path) -> Path:
    """The folder above the first component that names the user (the parent without one)."""
    parts = path.parts
    for i, part in enumerate(parts):
        if USER in part:
            return Path(*parts[:i])
    return path.parent


@dataclass(frozen=True)
class UserArea:
    """One user's area: ``root``, made (mode 0700, from ``base`` down) on first use.

    Attributes
    ----------
    root : Path
        The area (absolute).
    base : Path
        The operator's folder above it; the levels between ``base`` and ``root`` are created
        0700 (they name the user).
    """

    root: Path
    base: Path

    @classmethod
    def for_user(cls, template: str, user: str | None) -> UserArea:
        """The area of ``user`` under ``template`` (``{user}`` replaced by :func:`area_name`)."""
        template = os.path.expanduser(template)
        if USER in template:
            if not user:
                raise AreaError("This server keeps files per user, and the session has no user.")
            root = Path(template.replace(USER, area_name(user)))
        else:
            root = Path(template)
        return cls(root=root, base=_fixed_part(Path(template)))

    # -- checks (write nothing) -------------------------------------------------------

    def resolve(self, text: str | os.PathLike, *, what: str, example: str = "results") -> Path:
        """The folder inside the area that the relative path ``text`` names.

        ``""`` and ``"."`` name the area itself. Raises :class:`AreaError` (one sentence,
        nothing written) for an absolute path, ``~``, a ``..`` segment, a backslash, or a path
        whose existing components lead outside the area (symbolic links).
        """
        raw = os.fspath(text).strip()
        if not raw or raw == ".":
            return self.root
        if raw.startswith("~"):
            raise self._refused(what, raw, example, "starts with ~ (a home folder)")
        try:
            relative = local_path(raw, what=what)
        except UnusablePath as exc:
            raise AreaError(str(exc)) from None
        if relative.is_absolute():
            raise self._refused(what, raw, example, "is an absolute path")
        if ".." in relative.parts:
            raise self._refused(what, raw, example, "contains a '..' segment")
        if "\\" in raw:
            raise self._refused(what, raw, example, "contains a backslash; use / between folders")
        path = self.root.joinpath(relative)
        if not self.inside(path):
            raise self._refused(what, raw, example,
                                "leads outside your area through a symbolic link")
        return path

    def inside(self, path: Path) -> bool:
        """Whether every existing component of ``path`` below the area, and ``path`` itself,
        resolves (``os.path.realpath``) inside the area's real path."""
        path = Path(path)
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return False
        real_root = Path(os.path.realpath(self.root))
        current = self.root
        for part in ("", *relative.parts):
            current = current / part if part else current
            if not os.path.lexists(current):
                return True  # nothing below a missing level exists: nothing can lead outside
            if not Path(os.path.realpath(current)).is_relative_to(real_root):
                return False
        return True

    def check(self, path: Path) -> None:
        """Raise :class:`AreaError` unless :meth:`inside` (just before a rename)."""
        if not self.inside(path):
            raise AreaError(f"Refused to write {self.shown(path)}: it now leads outside your "
                            "area through a symbolic link.")

    def shown(self, path: Path) -> str:
        """``path`` as the user typed it: relative to the area (``"your area"`` for the root)."""
        try:
            relative = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return "a folder outside your area"
        return "your area" if relative == "." else relative

    # -- writing ---------------------------------------------------------------------------

    def make_folders(self, folder: Path) -> None:
        """Create the area (0700, from :attr:`base` down) and ``folder`` inside it, one level at
        a time, each checked to be a folder inside the area once it exists."""
        folder = Path(folder)
        if not self.inside(folder):
            raise AreaError(f"Refused to create {self.shown(folder)}: it leads outside your area.")
        levels = [(level, AREA_MODE) for level in _levels(self.base, self.root)]
        levels += [(level, 0o777) for level in _levels(self.root, folder)]
        self.base.mkdir(parents=True, exist_ok=True)
        for level, mode in levels:
            try:
                os.mkdir(level, mode)
            except FileExistsError:
                pass
            if not os.path.isdir(level):
                raise AreaError(f"Cannot create {self.shown(level)}: a file of that name is in "
                                "the way.")
            if level.is_relative_to(self.root) and not self.inside(level):
                raise AreaError(f"Refused to create {self.shown(folder)}: it leads outside your "
                                "area through a symbolic link.")

    def open_folder(self, folder: Path) -> int:
        """:meth:`make_folders`, then open ``folder`` and return its descriptor, checked (after
        opening) to be the folder at a real path inside the area. Writes relative to it
        (``dir_fd``) cannot be sent elsewhere by a later swap. The caller closes it."""
        self.make_folders(folder)
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            real = os.path.realpath(folder)
            opened, there = os.fstat(fd), os.stat(real)
            if ((opened.st_dev, opened.st_ino) != (there.st_dev, there.st_ino)
                    or not Path(real).is_relative_to(os.path.realpath(self.root))):
                raise AreaError(f"Refused to write into {self.shown(folder)}: it now leads "
                                "outside your area through a symbolic link.")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refused(self, what: str, raw: str, example: str, reason: str) -> AreaError:
        return AreaError(f"Refused: the {what} must be a relative path inside your area (e.g. "
                         f"{example}), and {shown(raw)!r} {reason}.")


def _levels(top: Path, path: Path) -> list[Path]:
    """The folders from below ``top`` down to ``path``: ``top/a``, ``top/a/b``, ..."""
    parts = path.relative_to(top).parts
    return [top.joinpath(*parts[:i + 1]) for i in range(len(parts))]
