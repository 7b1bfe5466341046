"""The report as one static HTML file: every picture embedded (base64), no script, no server, no network; a
section per task with a stable id (`task-{name}`), so that a browser test can find each one."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .banner { background: #fde2e2; padding: 0.6em; border: 1px solid #e99; }
section.task { border-top: 2px solid #ddd; margin-top: 2em; padding-top: 0.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8em; } figure.mistake { margin: 0; width: 150px; font-size: 0.8em; }
.below { color: #a00; font-weight: bold; }
"""


@dataclass
class TaskSection:
    """One task's part of the report."""

    name: str
    kind: str
    score_line: str
    below_chance: bool
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (title, header, rows)
    mistakes: list[tuple[bytes, str]] = field(default_factory=list)  # (JPEG thumbnail, caption)
    notes: list[str] = field(default_factory=list)


def _image(data: bytes, kind: str, alt: str, css_class: str) -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img class="{css_class}" alt="{html.escape(alt)}" src="data:image/{kind};base64,{encoded}">'


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<h4>{html.escape(title)}</h4><table><tr>{head}</tr>{body}</table>"


def render(title: str, summary: list[str], sections: list[TaskSection], banner: str | None = None) -> str:
    """The whole page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if banner:
        parts.append(f'<p class="banner" id="banner">{html.escape(banner)}</p>')
    parts += [f"<p>{html.escape(line)}</p>" for line in summary]
    parts.append(
        "<ul>" + "".join(f'<li><a href="#task-{s.name}">{html.escape(s.name)}</a></li>' for s in sections) + "</ul>"
    )
    for section in sections:
        score = html.escape(section.score_line)
        flagged = ' <span class="below">at or below chance</span>' if section.below_chance else ""
        parts.append(f'<section class="task" id="task-{html.escape(section.name)}" data-type="{section.kind}">')
        parts.append(f"<h2>{html.escape(section.name)} <small>({section.kind})</small></h2><p>{score}{flagged}</p>")
        parts += [f"<p>{html.escape(note)}</p>" for note in section.notes]
        figures = "".join(
            f"<figure>{_image(data, 'png', caption, 'figure')}<figcaption>{html.escape(caption)}</figcaption></figure>"
            for caption, data in section.figures
        )
        parts.append(f'<div class="figures">{figures}</div>')
        parts += [_table(*table) for table in section.tables]
        if section.mistakes:
            parts.append('<h4>The most confident mistakes</h4><div class="gallery">')
            parts += [
                f'<figure class="mistake">{_image(data, "jpeg", caption, "thumbnail")}'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                for data, caption in section.mistakes
            ]
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["TaskSection", "render"]
