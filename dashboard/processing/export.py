"""Writing processed frames: PNG 8-bit, TIFF float32, NPY float32, and the provenance file.

Every output is encoded completely in memory, then written under a temporary name in the target
folder and renamed (``os.replace``) into ``<file stem>_<index:06d>.<ext>``; on S3 it is uploaded
as one complete object (a PUT is atomic). A crash or cancel therefore never leaves a half-written
file under a final name. ``<file stem>_processing.json`` beside the outputs records where the
pixels came from and how they were made; it is rewritten the same atomic way as the run goes.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import EchoError
from ..storage.paths import AtomicFile, UnusablePath, local_path
from .pipeline import to_uint8

log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "LocalOutput",
    "OutputError",
    "S3Output",
    "decode",
    "encode",
    "file_stem",
    "open_output",
    "output_name",
    "provenance_name",
]

FORMATS = ("png", "tiff", "npy")
# zlib level 1: ~7x faster than Pillow's default 6 at 2048², files ~1.1-1.4x larger
DEFAULT_PNG_LEVEL = 1
_PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_CONTENT_TYPES = {"png": "image/png", "tiff": "image/tiff", "npy": "application/octet-stream",
                  "json": "application/json"}

try:
    import cv2 as _cv2
except ImportError:  # pragma: no cover - only where OpenCV is missing
    _cv2 = None


class OutputError(EchoError):
    """The output folder or bucket cannot be written (permission, full disk, bad name)."""


# -- names -----------------------------------------------------------------------------------

def file_stem(url_or_path: str) -> str:
    """The source object's name without its extension: ``s3://b/raw/scan_01.h5`` → ``scan_01``."""
    name = PurePosixPath(str(url_or_path).rstrip("/")).name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return re.sub(r"[^\w.\-+=@]", "_", stem) or "frames"


def output_name(stem: str, index: int, fmt: str) -> str:
    """``<stem>_<index:06d>.<fmt>``, e.g. ``scan_01_000020.png``."""
    _check_format(fmt)
    return f"{stem}_{int(index):06d}.{fmt}"


def provenance_name(stem: str) -> str:
    """``<stem>_processing.json``."""
    return f"{stem}_processing.json"


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise OutputError(f"Unknown output format {fmt!r}: choose one of {', '.join(FORMATS)}.")


# -- encoding --------------------------------------------------------------------------------

def png_encoder() -> str:
    """The PNG encoder in use (``"opencv"`` or ``"pillow"``); recorded in the provenance."""
    return "opencv" if _cv2 is not None else "pillow"


def encode(image: np.ndarray, fmt: str, *, png_level: int = DEFAULT_PNG_LEVEL,
           description: str = "", software: str = "") -> bytes:
    """Encode one processed frame.

    Parameters
    ----------
    image : (M, N) float ndarray
        The pipeline's output, nominally in [0, 1].
    fmt : {"png", "tiff", "npy"}
        ``png``: 8-bit grayscale ``round(clip(x, 0, 1) * 255)``; ``tiff``: float32, uncompressed,
        one strip per row block, ``description`` in the ImageDescription tag; ``npy``: float32.
    png_level : int
        zlib level 0–9 for PNG.
    description : str
        TIFF only: ASCII text (the run's parameters as JSON).
    software : str
        TIFF only: the Software tag.

    Returns
    -------
    bytes
        Deterministic: the same image and parameters give the same bytes.
    """
    _check_format(fmt)
    if fmt == "png":
        if not 0 <= int(png_level) <= 9:
            raise OutputError(f"The PNG compression level must be 0 to 9 (got {png_level}).")
        pixels = to_uint8(image)
        if _cv2 is not None:
            ok, buf = _cv2.imencode(".png", pixels, [_cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
            if not ok:  # pragma: no cover - OpenCV fails only on invalid input
                raise OutputError("OpenCV could not encode the PNG image.")
            return buf.tobytes()
        from PIL import Image  # without OpenCV: same pixels, other bytes

        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG", compress_level=int(png_level))
        return out.getvalue()
    data = np.ascontiguousarray(image, dtype=np.float32)
    out = io.BytesIO()
    if fmt == "tiff":
        import tifffile

        tifffile.imwrite(out, data, description=description or None, metadata=None,
                         software=software or None, photometric="minisblack")
    else:
        np.save(out, data, allow_pickle=False)
    return out.getvalue()


def decode(data: bytes, fmt: str) -> np.ndarray:
    """Read back what :func:`encode` wrote (uint8 for PNG, float32 otherwise)."""
    _check_format(fmt)
    if fmt == "png":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img)
    if fmt == "tiff":
        import tifffile

        return tifffile.imread(io.BytesIO(data))
    return np.load(io.BytesIO(data), allow_pickle=False)


def tiff_description(path: str) -> str:
    """The ImageDescription of a TIFF file (for checks and tests)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].description


def is_complete(path: str | os.PathLike, fmt: str, shape: tuple[int, int] | None = None) -> bool:
    """Whether a local output file is whole: the format's structure says so, cheaply.

    PNG: signature, IHDR size and the IEND trailer; NPY: header plus exactly the array's bytes;
    TIFF: the image strips lie inside the file. ``shape`` (rows, columns), when given, must match.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            if fmt == "png":
                head = fh.read(24)
                fh.seek(max(0, size - len(_PNG_TRAILER)))
                tail = fh.read()
                if not head.startswith(b"\x89PNG\r\n\x1a\n") or tail != _PNG_TRAILER:
                    return False
                width, height = struct.unpack(">II", head[16:24])
                return shape is None or (height, width) == tuple(shape)
            if fmt == "npy":
                version = np.lib.format.read_magic(fh)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)(fh)
                arr_shape, _, dtype = header
                expected = fh.tell() + int(np.prod(arr_shape)) * dtype.itemsize
                return size == expected and (shape is None or tuple(arr_shape) == tuple(shape))
            if fmt == "tiff":
                import tifffile

                with tifffile.TiffFile(fh) as tif:
                    page = tif.pages[0]
                    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
                    whole = bool(ends) and max(ends) <= size
                    return whole and (shape is None or tuple(page.shape) == tuple(shape))
    except Exception:  # unreadable, truncated header, not the format: not complete
        return False
    return False


# -- targets ---------------------------------------------------------------------------------

class LocalOutput:
    """A local output folder: temporary file in the folder, then ``os.replace``.

    With ``area`` (a :class:`~dashboard.storage.area.UserArea`) ``folder`` lies inside it; the
    folders are made one level at a time there and nothing is read or written through a
    symbolic link that leads outside it.
    """

    def __init__(self, folder: str | os.PathLike, *, area=None):
        self.folder = Path(folder).expanduser()
        self.area = area

    @property
    def location(self) -> str:
        """The folder; inside an area, as the user typed it (the server's path is not theirs)."""
        return self.area.shown(self.folder) if self.area is not None else str(self.folder)

    def __repr__(self) -> str:
        return f"LocalOutput({self.location!r})"

    def _path(self, name: str) -> Path:
        path = self.folder / name
        if self.area is not None:
            try:
                self.area.check(path)
            except EchoError as exc:
                raise OutputError(str(exc)) from None
        return path

    def check_writable(self) -> None:
        """Raise :class:`OutputError` unless the folder exists and is writable, or can be created.

        Writes nothing.
        """
        folder = self.folder
        show = str if self.area is None else self.area.shown
        if self.area is not None:
            self._path(".")  # nothing on the way leads outside the area
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"The output path {show(folder)} exists and is not a folder.")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OutputError(
                    f"The output folder {show(folder)} is not writable (permission denied).")
            return
        parent = folder.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"The output folder {show(folder)} cannot be created: "
                              f"{show(parent)} is not writable.")

    def existing(self) -> dict[str, int]:
        """``{name: size}`` of the files in the folder (empty when it does not exist)."""
        try:
            return {e.name: e.stat().st_size for e in os.scandir(self.folder) if e.is_file()}
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise OutputError(
                f"Cannot list the output folder {self.folder}: {exc.strerror}.") from None

    def complete(self, name: str, fmt: str, shape=None) -> bool:
        return is_complete(self._path(name), fmt, shape)

    def write(self, name: str, data: bytes) -> None:
        """Write ``data`` to ``name`` atomically (0666 & ~umask, as downloads are)."""
        target = self.folder / name
        try:
            with AtomicFile(target, area=self.area) as out:
                out.file.write(data)
                out.commit()
        except EchoError as exc:  # the area refused a folder on the way
            raise OutputError(str(exc)) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            shown_target = self.area.shown(target) if self.area is not None else target
            raise OutputError(f"Could not write {shown_target}: {reason}.") from None

    def read_text(self, name: str) -> str | None:
        path = self._path(name)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise OutputError(f"Cannot read {self.location}/{name}: {exc}.") from None

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()


class S3Output:
    """``s3://BUCKET/PREFIX``: each output is uploaded as one complete object."""

    def __init__(self, s3, bucket: str, prefix: str = ""):
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __repr__(self) -> str:
        return f"S3Output({self.location!r})"

    def key(self, name: str) -> str:
        return self.prefix + name

    def check_writable(self) -> None:
        """Raise :class:`OutputError` unless the bucket exists and accepts an upload.

        S3 permissions can only be proven by writing: a zero-byte probe object is uploaded and
        deleted. When the upload is refused nothing has been written.
        """
        client = self.s3.client
        probe = self.key(f".echo-s3-viewer-write-probe-{os.urandom(6).hex()}")
        try:
            client.head_bucket(Bucket=self.bucket)
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
        except Exception as exc:
            err = self.s3.translate(exc, bucket=self.bucket, action="write to")
            raise OutputError(f"The output {self.location} is not writable: {err}") from None
        try:
            client.delete_object(Bucket=self.bucket, Key=probe)
        except Exception:
            log.warning("Could not delete the write probe s3://%s/%s", self.bucket, probe)

    def existing(self) -> dict[str, int]:
        listing = self.s3.list_objects(self.bucket, self.prefix, limit=10_000_000)
        return {o.key[len(self.prefix):]: o.size for o in listing.objects
                if "/" not in o.key[len(self.prefix):]}

    def complete(self, name: str, fmt: str, shape=None) -> bool:
        # Uploads are whole objects: an object under its final key is complete.
        return True

    def write(self, name: str, data: bytes) -> None:
        ext = name.rsplit(".", 1)[-1]
        try:
            content_type = _CONTENT_TYPES.get(ext, "application/octet-stream")
            self.s3.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data,
                                      ContentType=content_type)
        except Exception as exc:
            raise OutputError(str(self.s3.translate(exc, bucket=self.bucket, key=self.key(name),
                                                    action="write"))) from None

    def read_text(self, name: str) -> str | None:
        from ..storage.s3 import NotFound

        try:
            _response, data = self.s3.get_object(self.bucket, self.key(name))
        except Exception as exc:
            err = self.s3.translate(exc, bucket=self.bucket, key=self.key(name), action="read")
            if isinstance(err, NotFound):
                return None
            raise OutputError(str(err)) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise OutputError(f"{self.location}{name} is not a UTF-8 text file.") from None

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.s3.get_object(self.bucket, self.key(name))[1]
        except Exception as exc:
            raise OutputError(str(self.s3.translate(exc, bucket=self.bucket, key=self.key(name),
                                                    action="read"))) from None


#: What a server without folders for its users says to a local output folder.
S3_ONLY = ("This server keeps no folders for its users: give the output folder as "
           "s3://bucket/prefix.")


def open_output(out: str | os.PathLike, *, s3=None, area=None, local: bool = True):
    """A :class:`LocalOutput` for a folder or an :class:`S3Output` for ``s3://BUCKET/PREFIX``.

    Parameters
    ----------
    area : UserArea, optional
        A folder is then a path relative to this user's area (refused when it leads outside).
    local : bool
        False on a shared server without areas: only ``s3://`` outputs (:data:`S3_ONLY`).
    """
    from ..storage.s3 import is_s3_url, parse_s3_url

    text = str(out)
    if is_s3_url(text):
        bucket, prefix = parse_s3_url(text)
        if s3 is None:
            raise OutputError(f"An S3 connection is needed to write to {text}.")
        return S3Output(s3, bucket, prefix)
    if not local:
        raise OutputError(S3_ONLY)
    try:
        if area is not None:
            return LocalOutput(area.resolve(text, what="output folder", example="processed"),
                               area=area)
        return LocalOutput(local_path(text, what="output folder"))
    except UnusablePath as exc:
        raise OutputError(str(exc)) from None


# -- provenance ------------------------------------------------------------------------------

def write_json(output, name: str, record: dict) -> None:
    """Write a JSON record atomically (sorted keys, indented, UTF-8)."""
    output.write(name, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def read_json(output, name: str) -> dict | None:
    """The JSON record ``name`` in ``output``, or None when absent or unreadable."""
    text = output.read_text(name)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        log.warning("Ignoring the unreadable provenance file %s in %s", name, output.location)
        return None
    return record if isinstance(record, dict) else None
