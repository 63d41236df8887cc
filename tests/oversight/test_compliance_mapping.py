"""The compliance mapping's framework titles are the frameworks' own."""

from __future__ import annotations

from proctor.oversight.compliance import load_mapping

# The ten titles of the final document, "OWASP Top 10 for Agentic Applications 2026"
# (OWASP GenAI Security Project, Agentic Security Initiative, December 2025), as its
# section headings give them; see docs/compliance.md for how they were checked. The
# first public draft (September 2025) differed: ASI01 was "Agent Behaviour Hijack".
OWASP_ASI_2026 = {
    "ASI01": "Agent Goal Hijack",
    "ASI02": "Tool Misuse and Exploitation",
    "ASI03": "Identity and Privilege Abuse",
    "ASI04": "Agentic Supply Chain Vulnerabilities",
    "ASI05": "Unexpected Code Execution (RCE)",
    "ASI06": "Memory & Context Poisoning",
    "ASI07": "Insecure Inter-Agent Communication",
    "ASI08": "Cascading Failures",
    "ASI09": "Human-Agent Trust Exploitation",
    "ASI10": "Rogue Agents",
}


def test_the_owasp_entries_are_the_ten_items_of_the_2026_document_with_its_titles() -> None:
    owasp = {e.ref: e.title for e in load_mapping() if e.framework == "owasp_asi"}
    assert owasp == OWASP_ASI_2026


def test_the_eu_ai_act_entries_are_articles_12_and_14_with_their_headings() -> None:
    eu = {e.ref: e.title for e in load_mapping() if e.framework == "eu_ai_act"}
    assert eu == {"Art. 12": "Record-keeping", "Art. 14": "Human oversight"}
