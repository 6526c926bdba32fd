"""Text from data (bucket names, object keys, HDF5 names and values, replies) made safe to show.

A key or a dataset name is whatever its author chose: ``b<script>…</script>.h5``, a Markdown
link, 5000 characters, or ``e\\u202egnp.exe.h5``, which a right-to-left override shows as
``eexe.png.h5``. This module is the lower half of the one rule for such text (no Panel here,
so state code that builds messages uses it too); :func:`dashboard.ui.text.plain` adds the HTML
escaping and is what every pane of the page shows.

* **Bidi and control characters** are replaced by a visible marker ``[U+202E]`` rather than
  stripped: the user sees that the name holds something unusual, and two names that differ only
  there stay different.
* **Long strings** are shortened in the middle (``run_00…_final.h5``): the start and the
  extension, the parts people recognise, stay.
"""

from __future__ import annotations

import re

__all__ = ["BIDI_CONTROLS", "SHOWN_CHARS", "labels", "neutral", "shorten", "shown"]

#: Characters that reorder text (embeddings, overrides, isolates, marks).
BIDI_CONTROLS = ("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                 "\u200e\u200f\u061c")

#: How much of one name a message repeats (keys, dataset names, URLs).
SHOWN_CHARS = 120

# Bidi controls, C0 controls but tab and newline, DEL and C1 controls.
_HIDDEN = re.compile(f"[{BIDI_CONTROLS}\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]")


def neutral(text: str) -> str:
    """``text`` with every bidi or control character replaced by ``[U+XXXX]`` (tab and newline
    kept)."""
    return _HIDDEN.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters in the middle, marked with ``…``."""
    if len(text) <= limit:
        return text
    if limit < 3:
        return text[:limit]
    head = (limit - 1) * 2 // 3
    tail = limit - 1 - head
    return text[:head] + "…" + text[-tail:]


def shown(text, limit: int = SHOWN_CHARS) -> str:
    """A name from data as a message may repeat it: :func:`neutral`, then :func:`shorten`."""
    return shorten(neutral(str(text)), limit)


def labels(values, limit: int = SHOWN_CHARS) -> dict:
    """``{label: value}`` for a choice (bucket, folder, dataset): each label is
    :func:`shown`, made unique with `` (2)``, `` (3)``… where two values look alike."""
    result: dict = {}
    for value in values:
        label = base = shown(value, limit)
        n = 1
        while label in result:
            n += 1
            label = f"{base} ({n})"
        result[label] = value
    return result
