"""Where a run's flat field and dark field come from (:class:`FieldSource`), and reading them.

The seed's flat, the mean of the :data:`~.pipeline.FLAT_FRAMES` frames before Start, stays the
default. The data formats carry their own, and a run may use them instead:

* ``file``: the open file's own fields. Data Exchange keeps them beside the projections
  (``/exchange/data_white`` and ``/exchange/data_dark`` next to ``/exchange/data``); NXtomo
  marks them in the stack itself with ``image_key`` (0 projection, 1 flat, 2 dark), and the
  run's Start, End and output numbers then count projections only.
* ``key:PATH``: a dataset of the same file: the flat (or dark) frames themselves (frames ×
  rows × columns, or one 2-D image), or an ``image_key`` (one integer per frame of the stack).
* ``s3://BUCKET/KEY`` (optionally ``#PATH``) or a local HDF5 path: another file, its default
  stack or the dataset after ``#`` (httomo's test data keeps flats and darks in files of their
  own).

A field is the mean of its normalized frames (:func:`~.pipeline.flat_from_frames`). With a dark,
the correction is ``(I - D) / max(F - D, 1e-6)`` (:func:`~.pipeline.flat_field`).

Examples
--------
>>> parse_source("key:/exchange/data_white", "flat")
FieldSource(kind='dataset', dataset='/exchange/data_white', url=None)
>>> parse_source("before-start", "flat").describe()
'the 20 frames before Start'
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import numpy as np

from ..errors import EchoError
from ..storage.s3 import is_s3_url
from .pipeline import FLAT_FRAMES, InterpolatedFlat, flat_from_frames, flat_range

__all__ = ["FieldSource", "Fields", "NO_DARK", "BEFORE_START", "FieldUnavailable",
           "parse_source", "read_field", "resolve"]

#: Frames a flat or dark dataset may have at most (their mean is read frame by frame; a larger
#: dataset is most likely the projections, chosen by mistake).
MAX_FIELD_FRAMES = 2000

#: Data Exchange's names for the flat (white) and dark fields, beside the projections.
EXCHANGE_NAMES = {"flat": "data_white", "dark": "data_dark"}


class FieldUnavailable(EchoError):
    """The flat or dark asked for cannot be used (missing, wrong shape, too many frames)."""


@dataclass(frozen=True)
class FieldSource:
    """Where a flat (or dark) comes from.

    ``kind`` is ``"before-start"`` (flats only: the frames before Start), ``"none"`` (darks
    only: no dark), ``"file"`` (the file's own field, resolved by :func:`resolve`),
    ``"dataset"`` (``dataset`` in the same file), ``"image-key"`` (the stack's own frames that
    the ``image_key`` at ``dataset`` marks as flats or darks) or ``"object"`` (another file at
    ``url``, its default stack or ``dataset``).
    """

    kind: str
    dataset: str | None = None
    url: str | None = None

    def describe(self) -> str:
        """In words, for status lines, errors and the provenance."""
        if self.kind == "before-start":
            return f"the {FLAT_FRAMES} frames before Start"
        if self.kind == "none":
            return "none"
        if self.kind == "file":
            return "the file's own"
        if self.kind == "dataset":
            return f"{self.dataset} of the same file"
        if self.kind == "image-key":
            return f"the frames {self.dataset} marks"
        where = self.url + (f" ({self.dataset})" if self.dataset else "")
        return where

    def to_json(self) -> dict:
        record = {"source": self.kind}
        if self.dataset:
            record["dataset"] = self.dataset
        if self.url:
            record["url"] = self.url
        return record

    @property
    def text(self) -> str:
        """The option's value that gives this source again (``--flat``/``--dark``)."""
        if self.kind in ("dataset", "image-key"):
            return f"key:{self.dataset}"
        if self.kind == "object":
            return self.url + (f"#{self.dataset}" if self.dataset else "")
        return self.kind


BEFORE_START = FieldSource("before-start")
NO_DARK = FieldSource("none")
#: The dashboard's labels of the two defaults.
BEFORE_START_LABEL = f"The {FLAT_FRAMES} frames before Start"
NO_DARK_LABEL = "None"


def parse_source(text, which: str) -> FieldSource:
    """A :class:`FieldSource` from an option's text (``which``: ``"flat"`` or ``"dark"``).

    Raises
    ------
    FieldUnavailable
        For text that names no source, or a source that cannot give this field.
    """
    if isinstance(text, FieldSource):
        return text
    value = "" if text is None else str(text).strip()
    if not value:
        return BEFORE_START if which == "flat" else NO_DARK
    if value == "before-start":
        if which == "dark":
            raise FieldUnavailable("A dark cannot come from the frames before Start; give "
                                   "--dark file, key:PATH or another file.")
        return BEFORE_START
    if value == "none":
        if which == "flat":
            raise FieldUnavailable("A run needs a flat: give --flat before-start, file, "
                                   "key:PATH or another file.")
        return NO_DARK
    if value == "file":
        return FieldSource("file")
    if value.startswith("key:"):
        path = value[len("key:"):].strip()
        if not path:
            raise FieldUnavailable(f"Give the dataset after key: (e.g. key:/exchange/"
                                   f"{EXCHANGE_NAMES[which]}).")
        return FieldSource("dataset", dataset="/" + path.lstrip("/"))
    url, _, dataset = value.partition("#")
    if not (is_s3_url(url) or url.lower().endswith((".h5", ".hdf5", ".nxs", ".hdf", ".he5"))):
        raise FieldUnavailable(
            f"Unknown {which} source {value!r}: give before-start, none, file, key:PATH, "
            "s3://bucket/key.h5 or a local .h5 file (optionally #PATH).")
    return FieldSource("object", dataset=("/" + dataset.lstrip("/")) if dataset else None,
                       url=url)


#: Where NXtomo files keep the image key, relative to the stack's group and its entry.
IMAGE_KEY_PLACES = ("image_key", "../instrument/detector/image_key", "../data/image_key",
                    "instrument/detector/image_key", "data/image_key")
KEY_VALUES = {"projection": 0, "flat": 1, "dark": 2}


def image_key_path(dataset: str, n_frames: int, info) -> str | None:
    """The path of the stack's NXtomo ``image_key`` (one integer per frame), or None.

    ``info(path)`` gives ``(shape, dtype kind)`` of the dataset at ``path``, or None.
    """
    group = posixpath.dirname(dataset) or "/"
    for place in IMAGE_KEY_PLACES:
        path = posixpath.normpath(posixpath.join(group, place))
        if _is_key(info(path), n_frames):
            return path
    return None


def _is_key(found, n_frames: int) -> bool:
    return found is not None and tuple(found[0]) == (n_frames,) and found[1] in "iu"


def resolve(source: FieldSource, which: str, *, dataset: str, n_frames: int,
            info) -> FieldSource:
    """``file`` made concrete for the open stack's ``dataset`` (Data Exchange's field beside
    it, else the NXtomo ``image_key``), and ``key:PATH`` of an image key marked as one; other
    sources unchanged. ``info(path)``: ``(shape, dtype kind)`` of a dataset of the file, or
    None."""
    if source.kind == "dataset":
        found = info(source.dataset)  # one metadata lookup for both questions
        if _is_key(found, n_frames):
            return FieldSource("image-key", dataset=source.dataset)
        if found is None:
            raise FieldUnavailable(f"This file has no dataset {source.dataset} (the {which} "
                                   "asked for).")
        return source
    if source.kind != "file":
        return source
    beside = posixpath.join(posixpath.dirname(dataset) or "/", EXCHANGE_NAMES[which])
    if info(beside) is not None:
        return FieldSource("dataset", dataset=beside)
    key = image_key_path(dataset, n_frames, info)
    if key is not None:
        return FieldSource("image-key", dataset=key)
    raise FieldUnavailable(
        f"This file has no {which} field of its own (no {beside} beside {dataset}, no "
        f"image_key); give --{which} key:PATH, another file, or "
        + ("before-start." if which == "flat" else "none."))


def raw_indices(projections, indices) -> list[int]:
    """The stack's frame indices of these numbers: the projections' (with an image key, whose
    projection frames are ``projections``), else the numbers themselves."""
    if projections is None:
        return [int(i) for i in indices]
    return [projections[i] for i in indices]


def key_frames(key: np.ndarray, which: str) -> np.ndarray:
    """Indices of the frames the image key marks as ``which`` (projection, flat, dark)."""
    return np.flatnonzero(np.asarray(key) == KEY_VALUES[which])


def flat_groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat frames an image key marks before the first projection and after the last
    (either may be empty); flats between projections belong to neither."""
    flats, projections = key_frames(key, "flat"), key_frames(key, "projection")
    if projections.size == 0:
        return flats, flats[:0]
    return flats[flats < projections[0]], flats[flats > projections[-1]]


def read_field(source: FieldSource, which: str, *, open_dataset, shape, key=None,
               stack=None, check_only: bool = False) -> np.ndarray | None:
    """The field's image: the mean of its normalized frames (float32), or None (no dark, or
    ``check_only``: its dataset is opened and checked, no frame is read).

    ``open_dataset(url_or_None, dataset_or_None)`` opens a stack (None url: the same file);
    the stack opened here is closed here. An ``image-key`` source reads the frames ``key``
    marks from ``stack`` (the run's own).

    Raises
    ------
    FieldUnavailable
        Frames of another shape than ``shape``, or more than :data:`MAX_FIELD_FRAMES`; an image
        key that marks no such frame.
    """
    if source.kind in ("none", "before-start"):
        return None
    if source.kind == "image-key":
        marked = key_frames(key, which)
        if marked.size == 0:
            raise FieldUnavailable(f"The image key {source.dataset} marks no {which} frames "
                                   f"(value {KEY_VALUES[which]}).")
        if marked.size > MAX_FIELD_FRAMES:
            raise FieldUnavailable(f"The image key marks {marked.size} {which} frames; at most "
                                   f"{MAX_FIELD_FRAMES} are averaged.")
        return None if check_only else flat_from_frames(stack.frames(marked.tolist()))
    stack = open_dataset(source.url if source.kind == "object" else None, source.dataset)
    try:
        n = len(stack)
        if tuple(stack.shape[-2:]) != tuple(shape):
            raise FieldUnavailable(
                f"The {which} field ({source.describe()}) has frames of "
                f"{stack.shape[-2]}×{stack.shape[-1]} pixels; the frames processed have "
                f"{shape[0]}×{shape[1]}.")
        if n > MAX_FIELD_FRAMES:
            raise FieldUnavailable(
                f"The {which} field ({source.describe()}) has {n} frames; at most "
                f"{MAX_FIELD_FRAMES} are averaged (is it the projections?).")
        return None if check_only else flat_from_frames(stack.frames(range(n)))
    finally:
        stack.close()


@dataclass
class Fields:
    """A run's flat and dark on an open stack: the sources made concrete, the NXtomo image key
    (when a field comes from it) and the numbering it brings. Build with :meth:`of`; the batch
    and the dashboard's preview both read their fields here."""

    flat: FieldSource
    dark: FieldSource
    image_key: np.ndarray | None = field(default=None, repr=False)
    #: With an image key: the stack's index of each projection (Start, End and the outputs
    #: count projections); None: numbers are the stack's own frame indices.
    projections: tuple[int, ...] | None = field(default=None, repr=False)
    stack: object = field(default=None, repr=False)
    s3: object = field(default=None, repr=False)
    opener: object = field(default=None, repr=False)
    #: Flats before and after the projections interpolated by position (image key only),
    #: instead of averaged.
    interpolate: bool = False

    @classmethod
    def of(cls, stack, flat=None, dark=None, *, s3=None, opener=None,
           interpolate: bool = False) -> Fields:
        """Parse and resolve ``flat``/``dark`` (option texts or sources) on ``stack``.

        ``opener(url, dataset)``, when given, opens the fields' stacks (the dashboard's
        provider); else :func:`~dashboard.hdf5.stack.open_stack` through ``s3``.
        ``interpolate``: the image key's flats before and after the scan, interpolated by
        position.

        Raises
        ------
        FieldUnavailable
            A source that names nothing usable in this file (one sentence), or interpolation
            without flats on both sides of the projections.
        """
        flat_source, dark_source = parse_source(flat, "flat"), parse_source(dark, "dark")
        n = len(stack)
        flat_source, dark_source = (
            resolve(source, which, dataset=stack.dataset, n_frames=n,
                    info=lambda path: _dataset_info(stack, path))
            for source, which in ((flat_source, "flat"), (dark_source, "dark")))
        key = projections = None
        keyed = [f for f in (flat_source, dark_source) if f.kind == "image-key"]
        if keyed:
            key = _read_key(stack, keyed[0].dataset)
            projections = tuple(int(i) for i in key_frames(key, "projection"))
        if interpolate:
            if flat_source.kind != "image-key":
                raise FieldUnavailable(
                    "Flats are interpolated by position only from an NXtomo image key (it says "
                    f"where each flat was taken); the flat here is {flat_source.describe()}.")
            before, after = flat_groups(key)
            if not before.size or not after.size:
                raise FieldUnavailable(
                    f"The image key {flat_source.dataset} marks flats only "
                    f"{'after' if not before.size else 'before'} the projections: there is "
                    "nothing to interpolate between (average them instead).")
        return cls(flat_source, dark_source, key, projections, stack, s3, opener, interpolate)

    @property
    def before(self) -> int:
        """Frames the flat needs before Start."""
        return FLAT_FRAMES if self.flat.kind == "before-start" else 0

    @property
    def count(self) -> int:
        """How many numbers Start and End range over (frames, or projections)."""
        return len(self.stack) if self.projections is None else len(self.projections)

    @property
    def numbering(self) -> str:
        if self.projections is None:
            return "frames"
        key = next(f.dataset for f in (self.flat, self.dark) if f.kind == "image-key")
        return f"projections (the frames {key} marks 0)"

    def raw(self, indices) -> list[int]:
        return raw_indices(self.projections, indices)

    def flat_indices(self, start: int) -> range | None:
        """The frames whose mean is the flat (the 20 before Start), or None: another source."""
        return flat_range(start) if self.flat.kind == "before-start" else None

    def check(self, shape) -> None:
        """Open the fields' datasets and check their frames (nothing is read)."""
        for source, which in ((self.flat, "flat"), (self.dark, "dark")):
            read_field(source, which, open_dataset=self._open, shape=shape, key=self.image_key,
                       stack=self.stack, check_only=True)

    def read(self, start: int, shape):
        """``(flat, dark)``: the flat (mean of its normalized frames, not floored; an
        :class:`~.pipeline.InterpolatedFlat` when interpolating) and the dark (or None), read
        from their sources for a run starting at ``start``."""
        before = self.flat_indices(start)
        if before is not None:
            flat = flat_from_frames(self.stack.frames(before))
        elif self.interpolate:
            groups = flat_groups(self.image_key)
            first, last = (flat_from_frames(self.stack.frames(g.tolist())) for g in groups)
            flat = InterpolatedFlat(first, last, float(groups[0].mean()),
                                    float(groups[1].mean()))
        else:
            flat = read_field(self.flat, "flat", open_dataset=self._open, shape=shape,
                              key=self.image_key, stack=self.stack)
        dark = read_field(self.dark, "dark", open_dataset=self._open, shape=shape,
                          key=self.image_key, stack=self.stack)
        return flat, dark

    def describe(self) -> str:
        """Which fields, in words (the dashboard's status and preview title)."""
        text = f"flat: {self.flat.describe()}"
        if self.interpolate:
            text += ", before and after the scan, interpolated by position"
        return text + (f"; dark: {self.dark.describe()}" if self.dark.kind != "none" else "")

    def _open(self, url: str | None, dataset: str | None):
        from ..hdf5.stack import open_stack

        url = url or self.stack.url
        spec = self.stack.spec() if hasattr(self.stack, "spec") else None
        try:
            if self.opener is not None:
                return self.opener(url, dataset)
            return open_stack(url, dataset, s3=self.s3 if is_s3_url(url) else None,
                              prefetch=False,
                              max_frame_pixels=getattr(spec, "max_frame_pixels", None))
        except EchoError as exc:
            raise FieldUnavailable(str(exc)) from None


def _dataset_info(stack, path: str):
    """``(shape, dtype kind)`` of the dataset at ``path`` in the stack's file, or None."""
    try:
        with stack.source.h5() as file:
            node = file.get(path)
            if node is None or not hasattr(node, "shape"):
                return None
            return tuple(int(v) for v in node.shape), node.dtype.kind
    except Exception:  # noqa: BLE001 - a broken link or an unreadable group: not there
        return None


def _read_key(stack, path: str) -> np.ndarray:
    """The image key's values (one small integer per frame: its length was checked)."""
    try:
        with stack.source.h5() as file:
            return np.asarray(file[path][()], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - unreadable: one sentence
        raise FieldUnavailable(f"Could not read the image key {path}: {exc}") from None


@dataclass(frozen=True)
class Offer:
    """The fields an open file offers (the dashboard's choices): ``{label: option text}`` for
    the flat and the dark, and the number of projections of an image-key option."""

    flat: dict
    dark: dict
    projections: dict  # option text -> projection count (image-key options only)
    interpolable: frozenset = frozenset()  # flat options with flats before and after the scan


def offered(stack) -> Offer:
    """What ``stack``'s file carries besides the seed's flat: Data Exchange's white and dark
    fields beside it, an NXtomo image key that marks flats and darks."""
    flat = {BEFORE_START_LABEL: "before-start"}
    dark = {NO_DARK_LABEL: "none"}
    projections = {}

    def info(path):
        return _dataset_info(stack, path)

    group = posixpath.dirname(stack.dataset) or "/"
    for which, options in (("flat", flat), ("dark", dark)):
        beside = posixpath.join(group, EXCHANGE_NAMES[which])
        found = info(beside)
        if found is not None:
            count = found[0][0] if len(found[0]) == 3 else 1
            options[f"{EXCHANGE_NAMES[which]} ({count} frame{'s' if count != 1 else ''})"] = (
                f"key:{beside}")
    key_path = image_key_path(stack.dataset, len(stack), info)
    interpolable = frozenset()
    if key_path is not None:
        key = _read_key(stack, key_path)
        text = f"key:{key_path}"
        if all(group.size for group in flat_groups(key)):
            interpolable = frozenset({text})
        for which, options in (("flat", flat), ("dark", dark)):
            marked = key_frames(key, which).size
            if marked:
                options[f"image_key ({marked} {which} frame{'s' if marked != 1 else ''})"] = text
        projections[text] = int(key_frames(key, "projection").size)
    return Offer(flat, dark, projections, interpolable)
