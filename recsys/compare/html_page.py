"""``report.html``: the compare report's Markdown as one self-contained HTML page, every plot's
SVG inline (no external files, no scripts), so it opens at a glance in any browser.

Renders the Markdown subset ``report.md`` uses: ``#`` headings, paragraphs, ``- `` lists,
pipe tables, ``![alt](name.svg)`` images, and inline ``code`` / ``**bold**``.
"""

from __future__ import annotations

import html
import re
from typing import Dict, List

STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px}
th{background:#f0f0f0}td.n{text-align:right}
figure{margin:1em 0}code{background:#f4f4f4;padding:0 3px}"""
IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*(e[-+]?\d+)?%?|NULL)$")


def inline(text: str) -> str:
    """Escaped text with `code` and **bold**."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _cells(line: str) -> List[str]:
    body = line.strip()[1:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _table(lines: List[str]) -> List[str]:
    head, rows = _cells(lines[0]), [_cells(x) for x in lines[2:]]
    out = ["<table>", "<tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f'<td class="n">{inline(c)}</td>' if NUMBER.match(c)
                             else f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in rows]
    return out + ["</table>"]


def _figure(alt: str, name: str, svgs: Dict[str, str]) -> str:
    svg = svgs.get(name)
    if svg is None:
        return f'<p class="missing">plot {html.escape(name)} missing</p>'
    return (f'<figure data-plot="{html.escape(name)}">{svg.strip()}'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def page(markdown: str, svgs: Dict[str, str]) -> str:
    """The page for ``markdown`` with the plots of ``svgs`` ({file name: SVG text}) inline."""
    lines, body, i = markdown.splitlines(), [], 0
    title = next((x[2:] for x in lines if x.startswith("# ")), "report")
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            body += _table(lines[i:j])
            i = j
            continue
        if line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            body += ["<ul>", *[f"<li>{inline(x[2:])}</li>" for x in lines[i:j]], "</ul>"]
            i = j
            continue
        heading = re.match(r"^(#{1,3}) (.*)$", line)
        image = IMAGE.match(line.strip())
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif image:
            body.append(_figure(image.group(1), image.group(2), svgs))
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>",
                      "<body>", *body, "</body></html>"]) + "\n"
