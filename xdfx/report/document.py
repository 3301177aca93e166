"""A tiny document model, rendered both as Markdown and as a self-contained HTML page.

The report's text is written once as a list of blocks; inline text may use `code` spans and
[`name`](#anchor) links, which both renderers understand, so the two files never drift apart.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Union

CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 3px}
h3{margin-top:2em;border-top:1px solid #ddd;padding-top:.8em}"""


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\[`([^`]*)`\]\(#([\w-]+)\)", r'<a href="#\2"><code>\1</code></a>', out)
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", out)


def _md_cell(cell) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Anchor:
    """A link target (``#id``) placed just before the block it names."""

    id: str


@dataclass
class Image:
    src: str  # relative to the report folder
    alt: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


Block = Union[Heading, Paragraph, Anchor, Image, Table]


def _markdown(block: Block) -> list[str]:
    if isinstance(block, Anchor):
        return [f'<a id="{block.id}"></a>']
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in (block.header, *block.rows)]
        return [lines[0], "|" + "---|" * len(block.header), *lines[1:], ""]
    if isinstance(block, Heading):
        return ["#" * block.level + " " + block.text, ""]
    return [block.text if isinstance(block, Paragraph) else f"![{block.alt}]({block.src})", ""]


def _html(block: Block) -> str:
    if isinstance(block, Anchor):
        return f'<a id="{html.escape(block.id)}"></a>'
    if isinstance(block, Table):
        head = "".join(f"<th>{_inline_html(str(c))}</th>" for c in block.header)
        body = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Image):
        return f'<p><img src="{html.escape(block.src)}" alt="{html.escape(block.alt)}"></p>'
    tag = f"h{block.level}" if isinstance(block, Heading) else "p"
    return f"<{tag}>{_inline_html(block.text)}</{tag}>"


def to_markdown(doc: list[Block]) -> str:
    return "\n".join(line for block in doc for line in _markdown(block))


def to_html(doc: list[Block]) -> str:
    head = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>xdfx report</title>',
            f"<style>{CSS}</style></head><body>"]
    return "\n".join(head + [_html(block) for block in doc] + ["</body></html>\n"])
