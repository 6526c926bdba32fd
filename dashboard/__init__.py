"""ECHO S3 Viewer: browse, inspect, view and process HDF5 image stacks straight from S3."""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "open_stack", "EchoS3Viewer"]


def __getattr__(name):
    # Lazy, so that importing the package (e.g. on a Dask worker) never pulls in Panel.
    if name == "open_stack":
        from .hdf5.stack import open_stack

        return open_stack
    if name == "EchoS3Viewer":
        from .ui.app import EchoS3Viewer

        return EchoS3Viewer
    raise AttributeError(f"module 'dashboard' has no attribute {name!r}")
