"""The report as Markdown or as one self-contained HTML page (no script, inline style)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

__all__ = ["FORMATS", "render_html", "render_markdown"]

FORMATS = ("md", "html", "json")

_env = Environment(loader=PackageLoader("proctor.oversight.compliance", "."),
                   autoescape=select_autoescape(["html"]), trim_blocks=True,
                   lstrip_blocks=True)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    """``report`` (its JSON form) as Markdown."""
    window, summary = report["window"], report["summary"]
    lines = [f"# Compliance report {window['since']} to {window['until']}", "",
             f"Generated {report['generated_at']}. {summary['evidenced']} of "
             f"{summary['entries']} entries have evidence; {summary['gaps']} gaps; "
             f"{summary['cited_events']} events cited."]
    checkpoint = report.get("checkpoint")
    lines += ["", "Cited events are covered by the signed checkpoint at position "
              f"{checkpoint['seq']} (key `{checkpoint['kid']}`, {checkpoint['signed_at']})."
              if checkpoint else "No signed checkpoint covers the cited events yet."]
    for framework, title in report["frameworks"].items():
        lines += ["", f"## {title}", "", "| item | control | proctor feature | evidence | "
                  "status |", "|---|---|---|---|---|"]
        for entry in (e for e in report["entries"] if e["framework"] == framework):
            found = "; ".join(
                f"{f['description']}: {f['count']}"
                + (f" (e.g. `{f['examples'][-1]['id']}`)" if f["examples"] else "")
                for f in entry["evidence"]) or "none"
            lines.append(f"| {_cell(entry['ref'])} {_cell(entry['title'])} | "
                         f"{_cell(entry['control'])} | {_cell(entry['feature'])} | "
                         f"{_cell(found)} | {entry['status']} |")
    lines += ["", "## Gaps", ""]
    lines += [f"- **{g['kind']}** `{_cell(g['subject'])}`: {g['detail']}"
              for g in report["gaps"]] or ["none"]
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any]) -> str:
    """``report`` (its JSON form) as a self-contained HTML page."""
    return _env.get_template("report.html").render(report=report)
