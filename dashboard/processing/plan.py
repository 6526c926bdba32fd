"""Plan a batch: validate every parameter before anything is written (:func:`plan_batch`).

The one home of the batch's rules: the frame range (:func:`range_problem`, also used by the
dashboard's Process step), sigma, format, the output, and resuming a previous run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import EchoError
from ..storage.s3 import is_s3_url
from . import export, flats
from .export import FORMATS, OutputError, open_output
from .pipeline import DEFAULT_SIGMA, FLAT_FRAMES, SIGMA_BOUNDS

__all__ = [
    "BatchError",
    "BatchFailed",
    "BatchPlan",
    "InvalidBatch",
    "plan_batch",
    "START_MESSAGE",
    "last_index",
    "range_problem",
    "resolve_scheduler",
]


class BatchError(EchoError):
    """A batch run cannot start or could not finish."""


class InvalidBatch(BatchError):
    """The batch parameters are invalid; nothing has been written."""


class BatchFailed(BatchError):
    """The run stopped on an error; ``.result`` tells what was written (the provenance too)."""

    def __init__(self, message: str, result: BatchResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class BatchPlan:
    """A validated run. Build it with :func:`plan_batch`."""

    url: str
    dataset: str
    stem: str
    shape: tuple[int, int]
    dtype: str
    n_frames: int
    etag: str
    size: int
    start: int
    end: int
    step: int
    sigma: float
    fmt: str
    png_level: int
    out: str
    resume: bool
    done: frozenset[int]  # frames whose outputs exist and are complete (resume)
    stack: object = field(repr=False)  # the open FrameStack
    output: object = field(repr=False)  # LocalOutput | S3Output
    s3: object = field(default=None, repr=False)
    fields: flats.Fields | None = field(default=None, repr=False)  # the flat and dark

    @property
    def flat_source(self) -> flats.FieldSource:
        return self.fields.flat

    @property
    def dark_source(self) -> flats.FieldSource:
        return self.fields.dark

    @property
    def projections(self) -> tuple[int, ...] | None:
        """With an NXtomo image key, the stack's index of each projection number."""
        return self.fields.projections

    def raw(self, indices) -> list[int]:
        """The stack's frame indices of these (projection) numbers."""
        return self.fields.raw(indices)

    @property
    def indices(self) -> range:
        return range(self.start, self.end + 1, self.step)

    @property
    def flat_indices(self) -> range | None:
        """The frames whose mean is the flat (the 20 before Start), or None: another source."""
        return self.fields.flat_indices(self.start)

    def read_fields(self):
        """``(flat, dark)`` read from their sources (see :meth:`.flats.Fields.read`)."""
        return self.fields.read(self.start, self.shape)

    @property
    def todo(self) -> list[int]:
        return [i for i in self.indices if i not in self.done]

    @property
    def last(self) -> int:
        """The last index the range contains."""
        return self.indices[-1]

    @property
    def provenance_name(self) -> str:
        return export.provenance_name(self.stem)

    def name(self, index: int) -> str:
        return export.output_name(self.stem, index, self.fmt)

    def spec(self):
        return self.stack.spec()

    def close(self) -> None:
        """Close the stack if :func:`plan_batch` opened it (a stack passed in stays open)."""
        if getattr(self, "_owns_stack", False):
            self.stack.close()

    def __enter__(self) -> BatchPlan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- planning --------------------------------------------------------------------------------

def plan_batch(
    source,
    *,
    dataset: str | None = None,
    start: int = FLAT_FRAMES,
    end: int | None = None,
    step: int = 1,
    sigma: float = DEFAULT_SIGMA,
    fmt: str = "png",
    out,
    png_level: int = export.DEFAULT_PNG_LEVEL,
    resume: bool | None = None,
    s3=None,
    endpoint: str | None = None,
    credentials=None,
    area=None,
    local: bool = True,
    flat=None,
    dark=None,
    field_opener=None,
    flat_interpolate: bool = False,
) -> BatchPlan:
    """Validate a batch and return its plan; raise :class:`InvalidBatch` (nothing written).

    Parameters
    ----------
    source : str, path or FrameStack
        ``s3://BUCKET/KEY``, a local HDF5 path, or an open stack.
    dataset : str, optional
        Dataset path (default: the detected stack).
    start, end, step : int
        Frames ``start … end`` inclusive, every ``step``-th; ``start >= 20`` (the flat is the
        20 frames before it); ``end`` defaults to the last frame.
    sigma : float
        Gaussian sigma in pixels, 0.01 to 100.
    fmt : {"png", "tiff", "npy"}
    out : str or path
        A folder or ``s3://BUCKET/PREFIX``.
    png_level : int
        PNG zlib level 0–9 (default 1).
    resume : bool, optional
        True: skip frames whose outputs exist and are complete (the provenance, if any, must
        describe the same run). None/False: resume only when the provenance says the previous
        run in ``out`` with the same parameters is unfinished; otherwise process everything.
        Either way a batch never replaces another run's results: an output holding the
        provenance of another run (other source, dataset, format, σ or start), or outputs of
        this name without any provenance, is refused.
    s3 : S3, optional
        Connection for an ``s3://`` source or output.
    endpoint, credentials
        Used to connect when ``s3`` is not given.
    area, local
        A shared server's rules for local outputs (:func:`~.export.open_output`).
    flat, dark : str or FieldSource, optional
        Where the flat and the dark come from (:func:`~.flats.parse_source`): by default the
        20 frames before Start and no dark; ``"file"``, ``"key:PATH"`` or another file's
        ``s3://`` URL or path (``#PATH`` for its dataset). With a flat that is not the frames
        before Start, Start may be any frame.
    field_opener : callable, optional
        ``opener(url, dataset)`` for the fields' stacks (see :class:`~.flats.Fields`).
    flat_interpolate : bool
        With an image-key flat: the flats before and after the scan, interpolated by each
        frame's position, instead of all flats averaged.
    """
    try:
        flat_source = flats.parse_source(flat, "flat")
        dark_source = flats.parse_source(dark, "dark")
    except flats.FieldUnavailable as exc:
        raise InvalidBatch(str(exc)) from None
    before = FLAT_FRAMES if flat_source.kind == "before-start" else 0
    _check_parameters(start=start, end=end, step=step, sigma=sigma, fmt=fmt, png_level=png_level,
                      before=before)
    fields_on_s3 = any(is_s3_url(f.url) for f in (flat_source, dark_source))
    if s3 is None and (is_s3_url(source) or is_s3_url(out) or fields_on_s3):
        from ..storage.s3 import S3

        s3 = S3(endpoint, _load_credentials(credentials))
    owns = not hasattr(source, "frames")
    if owns:
        from ..hdf5.stack import open_stack

        stack = open_stack(str(source), dataset, s3=s3 if is_s3_url(source) else None,
                           endpoint=endpoint, credentials=credentials, prefetch=False)
    else:
        stack = source
    try:
        plan = _plan_with_stack(stack, start=start, end=end, step=step, sigma=float(sigma),
                                fmt=fmt, out={"out": out, "s3": s3, "area": area, "local": local},
                                png_level=int(png_level), resume=resume, s3=s3,
                                fields=(flat_source, dark_source, field_opener,
                                        flat_interpolate))
    except BaseException:
        if owns:
            stack.close()
        raise
    plan._owns_stack = owns
    return plan


#: The rule every batch (and the dashboard's Process step) states when Start is too small.
START_MESSAGE = (f"The start frame must be at least {FLAT_FRAMES}, because the flat field is the "
                 f"mean of the {FLAT_FRAMES} frames before it")


def range_problem(n_frames: int, start: int, end: int, step: int = 1, *,
                  name: str = "", before: int = FLAT_FRAMES, projections: bool = False) -> str:
    """Why frames ``start … end`` (every ``step``-th) of an ``n_frames`` stack cannot be
    processed, in one sentence; ``""`` when they can. The one statement of the range rules.

    ``before``: the frames the flat needs before Start (0 when the flat comes from elsewhere).
    ``projections``: the numbers count projections (an NXtomo image key), ``n_frames`` of them.
    """
    the = f"The stack {name}" if name else "This stack"
    if projections:
        if n_frames == 0:
            return f"The image key of {name or 'this stack'} marks no projections (value 0)."
        if end >= n_frames:
            return (f"The end ({end}) must be less than the number of projections in the stack "
                    f"({n_frames}; Start and End count projections).")
    if n_frames < before + 1:
        return (f"{the} has {n_frames} frame{'s' if n_frames != 1 else ''}; a batch needs at "
                f"least {FLAT_FRAMES + 1} ({FLAT_FRAMES} for the flat field and one to process).")
    if start < before:
        return f"{START_MESSAGE} (got {start})."
    if start < 0:
        return f"The start frame must be 0 or more (got {start})."
    if step < 1:
        return f"The step must be a whole number of at least 1 (got {step})."
    if start >= n_frames:
        return f"The start frame ({start}) is beyond the last frame of the stack ({n_frames - 1})."
    if end < start:
        return f"The end frame ({end}) must not be before the start frame ({start})."
    if end >= n_frames:
        return (f"The end frame ({end}) must be less than the number of frames in the stack "
                f"({n_frames}).")
    return ""


def last_index(start: int, end: int, step: int = 1) -> int:
    """The last frame the range ``start … end`` (every ``step``-th) contains: the End frame
    snapped down to the Step grid (what the batch writes last, and what the preview shows)."""
    return start + (end - start) // step * step


def _check_parameters(*, start, end, step, sigma, fmt, png_level, before=FLAT_FRAMES) -> None:
    if fmt not in FORMATS:
        raise InvalidBatch(f"The output format must be one of {', '.join(FORMATS)} (got {fmt!r}).")
    if not isinstance(step, int | np.integer) or step < 1:
        raise InvalidBatch(f"The step must be a whole number of at least 1 (got {step}).")
    if not isinstance(start, int | np.integer) or start < before:
        raise InvalidBatch(f"{START_MESSAGE} (got {start})." if before
                           else f"The start frame must be 0 or more (got {start}).")
    if end is not None and (not isinstance(end, int | np.integer) or end < start):
        raise InvalidBatch(f"The end frame ({end}) must not be before the start frame ({start}).")
    try:
        sigma_ok = SIGMA_BOUNDS[0] <= float(sigma) <= SIGMA_BOUNDS[1]  # False for NaN
    except (TypeError, ValueError):
        sigma_ok = False
    if not sigma_ok:
        raise InvalidBatch(f"Sigma must be a number from {SIGMA_BOUNDS[0]:g} to "
                           f"{SIGMA_BOUNDS[1]:g} pixels (got {sigma}).")
    if not isinstance(png_level, int | np.integer) or not 0 <= png_level <= 9:
        raise InvalidBatch(f"The PNG compression level must be 0 to 9 (got {png_level}).")


def _plan_with_stack(stack, *, start, end, step, sigma, fmt, out: dict, png_level, resume,
                     s3, fields) -> BatchPlan:
    try:
        flat, dark, opener, interpolate = fields
        fields = flats.Fields.of(stack, flat, dark, s3=s3, opener=opener,
                                 interpolate=interpolate)
    except flats.FieldUnavailable as exc:
        raise InvalidBatch(str(exc)) from None
    n = fields.count
    if end is None:
        end = max(n - 1, start)
    problem = range_problem(n, start, end, step, name=stack.dataset, before=fields.before,
                            projections=fields.projections is not None)
    if problem:
        raise InvalidBatch(problem)
    try:
        output = open_output(**out)
    except EchoError as exc:
        raise InvalidBatch(str(exc)) from None
    stem = export.file_stem(stack.url)
    plan = BatchPlan(
        url=stack.url, dataset=stack.dataset, stem=stem,
        shape=tuple(int(v) for v in stack.shape[-2:]), dtype=str(stack.dtype), n_frames=n,
        etag=str(stack.etag or ""), size=int(stack.size or 0), start=int(start), end=int(end),
        step=int(step), sigma=sigma, fmt=fmt, png_level=png_level, out=output.location,
        resume=False, done=frozenset(), stack=stack, output=output, s3=s3,
        fields=fields,
    )
    try:
        fields.check(plan.shape)
    except flats.FieldUnavailable as exc:
        raise InvalidBatch(str(exc)) from None
    try:
        output.check_writable()
    except OutputError as exc:
        raise InvalidBatch(str(exc)) from None
    previous = export.read_json(output, plan.provenance_name)
    mismatch = _mismatch(previous, plan) if previous is not None else None
    unfinished = previous is not None and previous.get("status") != "complete"
    if resume:
        if mismatch:
            what, was, now = mismatch
            raise InvalidBatch(
                f"Cannot resume: the run recorded in {plan.out} used {what} {was!r} (now "
                f"{now!r}); choose another output folder or drop --resume."
            )
        plan.resume = True
    elif mismatch:  # never replace another run's results (another user's, on shared storage)
        raise InvalidBatch(
            f"The output folder {plan.out} holds the results of another run (its {mismatch[0]} "
            "differs); choose another output folder so that they are not replaced.")
    else:
        plan.resume = unfinished
    existing = output.existing() if plan.resume or previous is None else {}
    if previous is None and not resume:
        clash = next((plan.name(i) for i in plan.indices if plan.name(i) in existing), None)
        if clash:
            raise InvalidBatch(
                f"The output folder {plan.out} already holds {clash}, which no run recorded "
                "there wrote; choose another output folder so that it is not replaced.")
    if plan.resume:
        plan.done = frozenset(
            i for i in plan.indices
            if existing.get(plan.name(i)) and output.complete(plan.name(i), fmt, plan.shape)
        )
    return plan


def _mismatch(previous: dict, plan: BatchPlan) -> tuple[str, object, object] | None:
    """What differs between a recorded run and this plan, ``(what, was, now)``; None when it is
    the same run (it can be resumed or redone)."""
    source = previous.get("source", {})
    params = previous.get("parameters", {})
    checks = [
        ("source", source.get("url"), plan.url),
        ("dataset", source.get("dataset"), plan.dataset),
        ("source ETag", source.get("etag"), plan.etag),
        ("format", previous.get("format"), plan.fmt),
        ("sigma", params.get("sigma"), plan.sigma),
        ("start frame", previous.get("frames", {}).get("start"), plan.start),
        ("flat", (previous.get("flat") or {}).get("source", "before-start"),
         plan.flat_source.kind),
        ("flat dataset", (previous.get("flat") or {}).get("dataset"), plan.flat_source.dataset),
        ("flat file", (previous.get("flat") or {}).get("url"), plan.flat_source.url),
        ("flat interpolation", "interpolated" in (previous.get("flat") or {}),
         plan.fields.interpolate),
        ("dark", (previous.get("dark") or {}).get("source", "none"), plan.dark_source.kind),
        ("dark dataset", (previous.get("dark") or {}).get("dataset"), plan.dark_source.dataset),
        ("dark file", (previous.get("dark") or {}).get("url"), plan.dark_source.url),
    ]
    for what, was, now in checks:
        if was != now:
            return what, was, now
    return None


def _load_credentials(credentials):
    from ..storage.credentials import Credentials, load_credentials

    if credentials is None or isinstance(credentials, Credentials):
        return credentials
    return load_credentials(credentials)


def resolve_scheduler(value: str | None = None, env=None) -> str | None:
    """The Dask scheduler: ``value``, else ``$DASK_SCHEDULER_ADDRESS``, else None (threads)."""
    env = os.environ if env is None else env
    value = (value or env.get("DASK_SCHEDULER_ADDRESS") or "").strip()
    return value or None

