"""The ``info`` document of a file (:func:`describe`, ``info --json``) and its text form."""

from __future__ import annotations

from ..errors import EchoError
from ..storage.listing import human_size
from ..text import neutral
from .stacks import candidates_of, default_stack
from .tree import DEFAULT_NODE_LIMIT, walk


def describe(url_or_path, *, s3=None, endpoint: str | None = None, credentials=None,
             limit: int = DEFAULT_NODE_LIMIT, values: bool = False) -> dict:
    """The ``info --json`` document of a file (or of an open Source / FrameStack: no new GETs
    for what is already cached).

    Returns
    -------
    dict
        ``{"url", "default_stack": path or None, "nodes": [...], "truncated": bool,
        "node_limit": limit, "notes": [...]}``; ``nodes`` lists at most ``limit`` nodes
        breadth-first from the root, ``truncated`` says whether more exist; ``notes`` says,
        in sentences, where the listing stopped early for time or a group's size. With
        ``values``, each dataset node has a ``"value"`` (:meth:`.values.Value.to_json`).
    """
    from .source import H5PY_ERRORS, Source, open_source

    if isinstance(getattr(url_or_path, "source", None), Source):  # an open FrameStack
        url_or_path = url_or_path.source
    own = not isinstance(url_or_path, Source)
    source = (
        open_source(url_or_path, s3=s3, endpoint=endpoint, credentials=credentials)
        if own else url_or_path
    )
    try:
        notes: list[str] = []
        nodes = list(walk(source, limit=limit + 1, stopped=notes))
        truncated = len(nodes) > limit or bool(notes)
        nodes = nodes[:limit]
        default = default_stack(source, candidates=candidates_of(nodes))
        documents = [n.to_json() for n in nodes]
        if values:
            from .values import read_value

            for document in documents:
                if document["kind"] == "dataset":
                    try:
                        value = read_value(source, document["path"]).to_json()
                    except EchoError as exc:  # this dataset only: the others are still shown
                        value = {"kind": "reason", "text": str(exc)}
                    document["value"] = value
        return {
            "url": source.url,
            "default_stack": default,
            "nodes": documents,
            "truncated": truncated,
            "node_limit": limit,
            "notes": notes,
        }
    except H5PY_ERRORS as exc:
        raise source.translate(exc, "inspect") from None
    finally:
        if own:
            source.close()


def format_node(node: dict) -> str:
    """One line for one node of :func:`describe`'s output."""
    name = node["path"].rsplit("/", 1)[-1] or "/"
    kind = node["kind"]
    if kind == "group":
        text = "/" if name == "/" else f"{name}/"
    elif kind == "dataset":
        shape = "×".join(str(n) for n in node["shape"]) if node["shape"] else "scalar"
        text = f"{name}  {shape} {node['dtype']}"
        if node.get("chunks"):
            text += f"  chunks {'×'.join(str(n) for n in node['chunks'])}"
        if node.get("filters"):
            text += "  " + "+".join(f"{f['name']}({f['id']})" for f in node["filters"])
        if node.get("stored_bytes") is not None and node.get("logical_bytes"):
            stored = human_size(node["stored_bytes"], binary=True)
            text += f"  {stored} stored / {human_size(node['logical_bytes'], binary=True)}"
        if node.get("virtual"):
            text += "  [virtual]"
    else:
        text = f"{name} -> {node.get('target')}  [{kind.replace('_', ' ')}]"
    if node.get("value"):
        value = neutral(node["value"]["text"])  # a file's text never drives the terminal
        text += f"  = {value if len(value) <= 300 else value[:300] + '…'}"
    attrs = node.get("attrs") or {}
    if attrs:
        shown = ", ".join(f"{k}={v!r}" for k, v in list(attrs.items())[:4])
        more = f", … {len(attrs) - 4} more" if len(attrs) > 4 else ""
        text += f"  {{{shown}{more}}}"
    return text


def format_tree(description: dict) -> str:
    """Text for ``echo-s3-viewer info``: the tree indented by depth, then the default stack."""
    lines = [description.get("url", "")]
    for node in sorted(description["nodes"], key=lambda n: n["path"].strip("/").split("/")):
        depth = 0 if node["path"] == "/" else node["path"].count("/")
        lines.append("  " * depth + format_node(node))
    lines += [f"… {note}" for note in description.get("notes") or []]
    if description.get("truncated") and not description.get("notes"):
        lines.append(
            f"… only the first {description['node_limit']} nodes (breadth-first) are listed."
        )
    default = description.get("default_stack")
    lines.append(f"default stack: {default}" if default else "default stack: none (no numeric dataset with 2 or more dimensions)")
    return "\n".join(lines)
