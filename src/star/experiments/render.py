"""Markdown and HTML of a report's blocks, every value escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

Block = tuple[Any, ...]  # ("h1"|"h2"|"p", text) | ("list", items) | ("table", headers, rows) | ("img", file, alt)


def _md_escape(text: str, cell: bool = False) -> str:
    """Escape HTML-significant characters (and pipes in table cells) for Markdown."""
    out = html.escape(str(text), quote=False)
    return out.replace("|", "\\|") if cell else out


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown text of the blocks (every value escaped)."""
    lines: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + _md_escape(rest[0]), ""]
        elif kind == "p":
            lines += [_md_escape(rest[0]), ""]
        elif kind == "list":
            lines += [f"- {_md_escape(item)}" for item in rest[0]] + [""]
        elif kind == "table":
            headers, rows = rest
            lines.append("| " + " | ".join(_md_escape(h, True) for h in headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(_md_escape(c, True) for c in row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{_md_escape(rest[1])}]({rest[0]})", ""]
    return "\n".join(lines)


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def _e(text: Any) -> str:
    """`text` escaped for HTML (quotes too)."""
    return html.escape(str(text), quote=True)


def render_html(blocks: Sequence[Block]) -> str:
    """A standalone HTML page of the blocks (every value escaped)."""
    parts = ["<!doctype html>", "<html><head><meta charset=\"utf-8\"><title>STAR comparison report</title>",
             f"<style>{_CSS}</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{_e(rest[0])}</{kind}>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_e(item)}</li>" for item in rest[0]) + "</ul>")
        elif kind == "table":
            headers, rows = rest
            head = "".join(f"<th>{_e(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            parts.append(f"<p><img src=\"{_e(rest[0])}\" alt=\"{_e(rest[1])}\"></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

