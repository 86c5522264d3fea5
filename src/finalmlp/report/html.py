"""A self-contained HTML page from report sections: PNGs inlined as ``data:`` URIs, no scripts,
no external files; every text is escaped."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { font-size: .85em; color: #555; max-width: 600px; }
img { max-width: 100%; height: auto; } .note { color: #555; font-size: .9em; }
"""


@dataclass(frozen=True)
class Image:
    """A PNG figure with its alt text and caption."""

    png: bytes
    alt: str
    caption: str = ""

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Section:
    """A titled part of the report: notes (paragraphs), then tables, then images."""

    title: str
    notes: Sequence[str] = ()
    tables: Sequence[Table] = ()
    images: Sequence[Image] = ()

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower())


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image_html(image: Image) -> str:
    caption = f"<figcaption>{html.escape(image.caption)}</figcaption>" if image.caption else ""
    alt = html.escape(image.alt, quote=True)
    return f'<figure><img src="{image.data_uri()}" alt="{alt}">{caption}</figure>'


def _section_html(section: Section) -> str:
    parts = [f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>']
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    parts += [_table_html(table) for table in section.tables]
    parts += [_image_html(image) for image in section.images]
    parts.append("</section>")
    return "\n".join(parts)


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """The whole page: title, a contents list, then each section."""
    contents = "".join(
        f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections
    )
    body = "\n".join(_section_html(section) for section in sections)
    lead = f'<p class="note">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{lead}\n<ul>{contents}</ul>\n{body}\n</body>\n</html>\n"
    )
