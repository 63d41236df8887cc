"""Compliance evidence: proctor's controls mapped to OWASP's Top 10 for Agentic
Applications, CSA MAESTRO, NIST AI RMF 1.0 and the EU AI Act (Articles 12 and 14), a
report built from real decisions and state, and an evidence bundle that verifies
offline. See ``docs/compliance.md``.
"""

from proctor.oversight.compliance.bundle import (
    BUNDLE_TYPE,
    BundleCheck,
    key_id,
    make_bundle,
    verify_bundle,
)
from proctor.oversight.compliance.evidence import QUERIES, Evidence, Example, gather_evidence
from proctor.oversight.compliance.gaps import Gap, find_gaps
from proctor.oversight.compliance.mapping import (
    FRAMEWORKS,
    MAPPING_FILE,
    MappingEntry,
    load_mapping,
)
from proctor.oversight.compliance.render import FORMATS, render_html, render_markdown
from proctor.oversight.compliance.report import (
    REPORT_TYPE,
    ComplianceReport,
    ReportSources,
    build_report,
)

__all__ = [
    "BUNDLE_TYPE",
    "FORMATS",
    "FRAMEWORKS",
    "MAPPING_FILE",
    "QUERIES",
    "REPORT_TYPE",
    "BundleCheck",
    "ComplianceReport",
    "Evidence",
    "Example",
    "Gap",
    "MappingEntry",
    "ReportSources",
    "build_report",
    "find_gaps",
    "gather_evidence",
    "key_id",
    "load_mapping",
    "make_bundle",
    "render_html",
    "render_markdown",
    "verify_bundle",
]
