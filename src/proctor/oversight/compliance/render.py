"""The report as Markdown or as one self-contained HTML page (no script, inline style).

What a report shows comes in part from outside: a tool's name an upstream chose, an
agent's id, a connector's server and secret names, an event id. None of it may format
the report or reach the terminal it is printed on as anything but text. In Markdown
each character of a value that can open inline formatting is backslash-escaped
(``\\ ` * _ [ ] < > ( ) ! | ~ & : @``, and the ``.`` of ``www.``), so that no value
opens a link, an image, raw HTML, an autolink (GFM's extended ones included), a code
span or a table cell of its own (a value never starts a line:
its line breaks are escaped, so it opens no heading or list either); in both formats the
unseen characters (:mod:`proctor.unseen`: C0 and C1 controls, DEL, bidirectional
overrides, zero-width spaces, tag characters, variation selectors...) are written as
``\\uXXXX``: raw, an escape
sequence in a value cleared the operator's screen or set its title when the report was
printed (``proctor report compliance`` writes it to stdout), and a bidirectional
override showed a value reordered.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from proctor.unseen import unseen_replaced

__all__ = ["FORMATS", "render_html", "render_markdown"]

FORMATS = ("md", "html", "json")

# what can open inline formatting (emphasis, code, links, images, raw HTML, entities,
# autolinks, strikethrough, a table's cell): a value never starts a line (its line
# breaks are \u000a), so what matters only there (#, -, +, digits and a dot) is left
_PUNCTUATION = re.compile(r"([\\`*_\[\]<>()!|~&:@])")
# GFM's extended autolinks: `www.` opens one, as an address's `@` does (above); a scheme's
# `:` is escaped already
_WWW = re.compile(r"(?i)(?<=www)\.")


def _shown_char(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(value: Any) -> str:
    """``value`` as text with its unseen characters (:mod:`proctor.unseen`: controls,
    line breaks, invisible or reordering characters) written ``\\uXXXX``."""
    return unseen_replaced(str(value), _shown_char)


def _finalized(value: Any) -> Any:
    """Each value an HTML template writes, :func:`shown`; markup a filter made stays
    markup (its characters escaped already)."""
    if isinstance(value, Markup):  # escaped already: only its hidden characters shown
        return Markup(shown(value))  # noqa: S704
    return shown(value)


def _md(value: Any) -> str:
    """``value`` as Markdown text that formats nothing (a backslash before ``u`` is
    itself, in CommonMark: the ``\\uXXXX`` of :func:`shown` stays as written)."""
    return shown(_WWW.sub(r"\\.", _PUNCTUATION.sub(r"\\\1", str(value))))


_env = Environment(loader=PackageLoader("proctor.oversight.compliance", "."),
                   autoescape=select_autoescape(["html"]), trim_blocks=True,
                   lstrip_blocks=True, finalize=_finalized)


def render_markdown(report: dict[str, Any]) -> str:
    """``report`` (its JSON form) as Markdown."""
    window, summary = report["window"], report["summary"]
    lines = [f"# Compliance report {_md(window['since'])} to {_md(window['until'])}", "",
             f"Generated {_md(report['generated_at'])}. {_md(summary['evidenced'])} of "
             f"{_md(summary['entries'])} entries have evidence; {_md(summary['gaps'])} gaps; "
             f"{_md(summary['cited_events'])} events cited."]
    checkpoint = report.get("checkpoint")
    lines += ["", "Cited events are covered by the signed checkpoint at position "
              f"{_md(checkpoint['seq'])} (key {_md(checkpoint['kid'])}, "
              f"{_md(checkpoint['signed_at'])})."
              if checkpoint else "No signed checkpoint covers the cited events yet."]
    for framework, title in report["frameworks"].items():
        lines += ["", f"## {_md(title)}", "", "| item | control | proctor feature | "
                  "evidence | status |", "|---|---|---|---|---|"]
        for entry in (e for e in report["entries"] if e["framework"] == framework):
            found = "; ".join(
                f"{_md(f['description'])}: {_md(f['count'])}"
                + (f" (e.g. {_md(f['examples'][-1]['id'])})" if f["examples"] else "")
                for f in entry["evidence"]) or "none"
            lines.append(f"| {_md(entry['ref'])} {_md(entry['title'])} | "
                         f"{_md(entry['control'])} | {_md(entry['feature'])} | "
                         f"{found} | {_md(entry['status'])} |")
    lines += ["", "## Gaps", ""]
    lines += [f"- **{_md(g['kind'])}** {_md(g['subject'])}: {_md(g['detail'])}"
              for g in report["gaps"]] or ["none"]
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any]) -> str:
    """``report`` (its JSON form) as a self-contained HTML page."""
    return _env.get_template("report.html").render(report=report)
