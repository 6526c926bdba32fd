"""Deep links: the view of a session as URL query parameters, and back.

Pure functions over a table, :data:`FIELDS`: one declarative entry per shared value (query
name, owning state object, parameter name, codec). Nothing here touches the network, Panel or
the page; :meth:`Session.link` and :meth:`Session.restore` use these functions, and
``ui/links.py`` puts the result into the address bar.

What a link carries: where the file is (bucket, key, the endpoint when it is not the server's
default), what is shown (dataset, frame, colormap, equalize, contrast mode, percentiles and
limits) and the processing parameters (start, end, step, sigma, format). What it never carries:
keys of any kind, the key file's path, a profile, the output folder (a path on the server, or
a prefix the sender may write to: the receiver chooses their own) or the download folder.

Decoding never raises: a hostile or broken query string gives a :class:`Link` whose
``problems`` name the fields that were ignored and why, in words of our own (never the raw
value, which could be huge or carry markup).

Examples
--------
>>> from dashboard.state.viewer import ViewerState
>>> link = decode_query("?bucket=echo-demo&key=a/b.h5&frame=7&colormap=viridis&frame2=x",
...                     {"viewer": ViewerState})
>>> link.values["frame"], link.values["colormap"], link.ignored
(7, 'viridis', 1)
>>> decode_query("frame=-3&colormap=<script>", {"viewer": ViewerState}).problems[0]
'frame (a whole number from 0 to 1000000000)'
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..storage.s3 import HDF5_SUFFIXES, StorageError, is_s3_url, parse_s3_url

#: Longest query string read at all (a link is a few hundred characters).
MAX_QUERY = 8192
#: Longest single value (an S3 key is at most 1024 bytes).
MAX_VALUE = 1024
MAX_FRAME = 10**9

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class Malformed(ValueError):
    """A link value that cannot be used; the message says what a good one looks like."""


# -- codecs: (encode(value) -> str, decode(text, parameter) -> value) ------------------------


@dataclass(frozen=True)
class Codec:
    encode: Callable[[object], str]
    decode: Callable[[str, object], object]


def _printable(text: str, what: str) -> str:
    if "\ufffd" in text:
        raise Malformed(f"{what} that is valid UTF-8")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in text):
        raise Malformed(f"{what} without control characters")
    if len(text.encode("utf-8")) > MAX_VALUE:
        raise Malformed(f"{what} of at most {MAX_VALUE} bytes")
    return text


def _text(check: Callable[[str], str]) -> Codec:
    return Codec(encode=str, decode=lambda text, parameter: check(text))


def _integer(low: int = 0, high: int = MAX_FRAME) -> Codec:
    def decode(text: str, parameter) -> int:
        text = text.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 10 or not (
                low <= int(text) <= high):
            raise Malformed(f"a whole number from {low} to {high}")
        return int(text)

    return Codec(encode=lambda v: str(int(v)), decode=decode)


def _float(text: str, low: float | None, high: float | None, what: str) -> float:
    text = text.strip()
    if len(text) > 40 or not _NUMBER.fullmatch(text):
        raise Malformed(what)
    value = float(text)
    if not math.isfinite(value) or (low is not None and value < low) or (
            high is not None and value > high):
        raise Malformed(what)
    return value


def _bounds(parameter) -> tuple[float | None, float | None]:
    bounds = getattr(parameter, "bounds", None) or (None, None)
    return bounds[0], bounds[1]


def _format_number(value) -> str:
    return format(float(value), ".10g")


def _number() -> Codec:
    def decode(text: str, parameter) -> float:
        low, high = _bounds(parameter)
        span = (f"from {low:g} to {high:g}" if low is not None and high is not None
                else "finite")
        return _float(text, low, high, f"a number, {span}")

    return Codec(encode=_format_number, decode=decode)


def _range() -> Codec:
    def decode(text: str, parameter) -> tuple[float, float]:
        low, high = _bounds(parameter)
        span = (f" from {low:g} to {high:g}" if low is not None and high is not None else "")
        what = f"two numbers{span}, low first, e.g. 1,99"
        parts = text.split(",")
        if len(parts) != 2:
            raise Malformed(what)
        a, b = (_float(p, low, high, what) for p in parts)
        if a > b:
            raise Malformed(what)
        return (a, b)

    return Codec(encode=lambda v: f"{_format_number(v[0])},{_format_number(v[1])}",
                 decode=decode)


def _boolean() -> Codec:
    def decode(text: str, parameter) -> bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise Malformed("true or false")

    return Codec(encode=lambda v: "true" if v else "false", decode=decode)


def _choice() -> Codec:
    def decode(text: str, parameter) -> str:
        objects = getattr(parameter, "objects", None) or []
        names = list(objects.values()) if isinstance(objects, Mapping) else list(objects)
        for name in names:
            if isinstance(name, str) and name.lower() == text.strip().lower():
                return name
        raise Malformed("one of " + ", ".join(str(n) for n in names))

    return Codec(encode=str, decode=decode)


def check_bucket(text: str) -> str:
    """An S3 bucket name (letters, digits, ``.``, ``-``, ``_``; up to 255 characters)."""
    if not _BUCKET.fullmatch(text):
        raise Malformed("a bucket name (letters, digits, '.', '-', '_')")
    return text


def check_key(text: str) -> str:
    """An object key: printable UTF-8, at most 1024 bytes, naming an HDF5 file."""
    _printable(text, "an object key")
    if not text.strip() or not text.lower().endswith(HDF5_SUFFIXES):
        raise Malformed("the key of an HDF5 file (.h5, .hdf5, .nxs, .hdf)")
    return text


def check_dataset(text: str) -> str:
    """An HDF5 path such as ``/entry/data/data``."""
    _printable(text, "an HDF5 path")
    if not text.startswith("/") or len(text) < 2:
        raise Malformed("an HDF5 path such as /entry/data/data")
    return text


def check_endpoint(text: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL without user name, password, query or fragment."""
    from ..config import normalize_endpoint
    from ..errors import EchoError

    what = "an http:// or https:// endpoint without user, password, query or fragment"
    _printable(text, "an endpoint")
    try:
        url = normalize_endpoint(text)
    except EchoError:
        raise Malformed(what) from None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise Malformed(what) from None
    if not parts.hostname or "@" in parts.netloc or parts.query or parts.fragment or any(
            c.isspace() for c in url):
        raise Malformed(what)
    return url


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkField:
    """One shared value: query ``name`` ↔ ``getattr(session.<owner>, param)``.

    ``owner`` is ``None`` for the location of the file (bucket, key, endpoint), which the
    session derives from the open file rather than from one parameter.
    """

    name: str
    owner: str | None
    param: str | None
    codec: Codec


FIELDS: tuple[LinkField, ...] = (
    LinkField("endpoint", None, None, _text(check_endpoint)),
    LinkField("bucket", None, None, _text(check_bucket)),
    LinkField("key", None, None, _text(check_key)),
    LinkField("dataset", "viewer", "dataset", _text(check_dataset)),
    LinkField("frame", "viewer", "index", _integer()),
    LinkField("colormap", "viewer", "colormap", _choice()),
    LinkField("equalize", "viewer", "equalize", _boolean()),
    LinkField("contrast_mode", "viewer", "contrast_mode", _choice()),
    LinkField("percentiles", "viewer", "percentiles", _range()),
    LinkField("contrast", "viewer", "contrast", _range()),
    LinkField("start", "processor", "start", _integer()),
    LinkField("end", "processor", "end", _integer()),
    LinkField("step", "processor", "step", _integer(low=1)),
    LinkField("sigma", "processor", "sigma", _number()),
    LinkField("format", "processor", "format", _choice()),
)
BY_NAME = {f.name: f for f in FIELDS}
#: Shown in this order after the location (file first, then the view, then processing).
DISPLAY = ("colormap", "equalize", "contrast_mode", "percentiles", "contrast")
PROCESSING = ("start", "end", "step", "sigma", "format")


def parameter(owners: Mapping[str, object], item: LinkField):
    """The ``param.Parameter`` behind ``item`` on ``owners[item.owner]``, or ``None`` when
    that state object (or that parameter: a newer or older dashboard) does not exist."""
    if item.owner is None:
        return None
    owner = owners.get(item.owner)
    params = getattr(owner, "param", None)
    if params is None or item.param not in params:
        return None
    return params[item.param]


def available(owners: Mapping[str, object], item: LinkField) -> bool:
    return item.owner is None or parameter(owners, item) is not None


# -- links -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A decoded link: the usable values (query name → Python value) and what was dropped."""

    values: dict = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    ignored: int = 0  # query parameters this dashboard does not know

    def __bool__(self) -> bool:
        return bool(self.values)

    def message(self) -> str:
        """One sentence about the ignored parts ("" when everything was usable)."""
        parts = list(self.problems)
        if self.ignored:
            parts.append(f"{self.ignored} unknown parameter{'s' if self.ignored != 1 else ''}")
        return f"Parts of this link were ignored: {', '.join(parts)}." if parts else ""


#: Query parameters that the page's host adds for itself: Jupyter's login token (the JupyterHub
#: launcher entry opens ``…/echo-s3-viewer/app?token=…``). Neither used nor reported.
FOREIGN = frozenset({"token"})


def parse_query(query: str | Mapping | None) -> tuple[dict[str, list[str]], str]:
    """Split a query string (``"?a=1&b=2"``) or a request's arguments (name → list of
    ``bytes``/``str``) into name → list of values; the second item is a reason to refuse the
    whole link ("" if none)."""
    if not query:
        return {}, ""
    if isinstance(query, Mapping):
        pairs = []
        for name, values in query.items():
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(value, bytes):
                    value = value.decode("utf-8", errors="replace")
                pairs.append((str(name), str(value)))
        size = sum(len(n) + len(v) + 2 for n, v in pairs)
    else:
        query = str(query)
        size = len(query)
        if size <= MAX_QUERY:
            pairs = parse_qsl(query.removeprefix("?"), keep_blank_values=True,
                              errors="replace", max_num_fields=200)
    if size > MAX_QUERY:
        return {}, f"all of it: it is too long ({size} characters)"
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped, ""


def decode_query(query: str | Mapping | None, owners: Mapping[str, object]) -> Link:
    """Read a link; every value checked against its codec and the owner's parameter.

    Parameters
    ----------
    query : str or mapping
        ``"?bucket=...&key=..."`` or request arguments (name → list of values).
    owners : mapping
        ``{"browser": ..., "viewer": ..., "processor": ...}``: state objects or their classes;
        a field whose owner or parameter is missing counts as unknown.

    Returns
    -------
    Link
        Never raises: malformed values are left out and named in ``problems``.
    """
    try:
        grouped, refused = parse_query(query)
    except ValueError:  # more than max_num_fields
        return Link(problems=("all of it: too many parameters",))
    if refused:
        return Link(problems=(refused,))
    values, problems, ignored = {}, [], 0
    for name, texts in grouped.items():
        if name in FOREIGN:
            continue  # the host's own parameter, not a part of our link
        item = BY_NAME.get(name)
        if item is None or not available(owners, item):
            ignored += 1
            continue
        if len(texts) != 1:
            problems.append(f"{name} (given {len(texts)} times)")
            continue
        text = texts[0]
        if text == "":
            continue  # an empty value means "not given"
        try:
            if len(text) > 4 * MAX_VALUE:
                raise Malformed("a shorter value")
            values[name] = item.codec.decode(text, parameter(owners, item))
        except Malformed as exc:
            problems.append(f"{name} ({exc})")
    return Link(values=values, problems=tuple(problems), ignored=ignored)


def encode_query(values: Mapping[str, object]) -> str:
    """The query string (no ``?``) of ``values`` (query name → value), in table order; values
    that are ``None`` are left out. Names that are not in :data:`FIELDS` raise ``KeyError``:
    nothing outside the table (keys, paths) can ever reach a URL."""
    for name in values:
        if name not in BY_NAME:
            raise KeyError(f"{name!r} is not a link field")
    pairs = [(item.name, item.codec.encode(values[item.name])) for item in FIELDS
             if values.get(item.name) is not None]
    return urlencode(pairs)


def read_view(owners: Mapping[str, object], names) -> dict:
    """``{name: getattr(owner, param)}`` for the given table names whose owner exists."""
    found = {}
    for name in names:
        item = BY_NAME[name]
        if parameter(owners, item) is not None:
            found[name] = getattr(owners[item.owner], item.param)
    return found


def split_url(url: str) -> tuple[str, str] | None:
    """``"s3://bucket/key"`` → ``("bucket", "key")`` (``None`` for anything else)."""
    if not is_s3_url(url):
        return None
    try:
        bucket, key = parse_s3_url(url)
    except StorageError:
        return None
    return (bucket, key) if bucket and key else None
