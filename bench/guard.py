"""What the output guard's scan costs, per shape of result, with one injected secret known.

Usage::

    uv run python bench/guard.py            # 15 rounds per shape
    uv run python bench/guard.py --quick    # 5 rounds
    uv run python bench/guard.py --smoke    # 1 round
    uv run python bench/guard.py --src OTHER/src   # another checkout's guard, to compare

The shapes, each scanned whole once per round (``harness.measure``, rotated):

- ``small``: a tool result of one text block (what most calls return);
- ``split_16000``: a list of 16,000 strings, the secret split across every boundary
  (the split matching's worst case: each occurrence crosses two items);
- ``blocks_16000``: 16,000 ``text`` content blocks of a few words each (the objects'
  own values are read joined too);
- ``lines_1mb``: 1 MB of text in short lines (line breaks: a reading without them);
- ``base64_1mb``: 1 MB of base64 text (one long run, decoded and searched);
- ``media_random_1mib``: an image whose ``data`` is 1 MiB of random bytes (searched as
  text is: one byte in eight a control a reading leaves out);
- ``media_text_1mib``: a resource whose ``blob`` is a 1 MiB text file of short lines
  holding three secrets, hidden (split by NULs, by zero-width spaces, as HTML
  references): found by a reading, and mapped back to the bytes they came from.

Reports the CPU time per scan (the thread's: the guard is pure CPU) and prints one JSON
object on its last line: the medians, in milliseconds.
"""

from __future__ import annotations

import base64
import secrets
import sys
from pathlib import Path
from typing import Any

import harness

ROOT = Path(__file__).resolve().parents[1]


def _text_file(value: str) -> bytes:
    lines = ["lorem ipsum dolor sit amet"] * 38_836  # 1 MiB with the line breaks
    lines[1_000] += "\x00".join(value)
    lines[19_000] += "".join(f"&#x{ord(c):x};" for c in value)
    lines[38_000] += "\u200b".join(value)
    return "\n".join(lines).encode()


def _shapes(value: str) -> dict[str, Any]:
    half = len(value) // 2
    random_media = base64.b64encode(secrets.token_bytes(1 << 20)).decode()
    text_media = base64.b64encode(_text_file(value)).decode()
    return {
        "small": {"content": [{"type": "text", "text": "hello from the echo upstream " * 20}]},
        "split_16000": {"lines": [value[half:] + " " + value[:half]] * 16_000},
        "blocks_16000": {"content": [{"type": "text", "text": f"item {n} of the listing"}
                                     for n in range(16_000)]},
        "lines_1mb": {"text": "lorem ipsum dolor sit amet\n" * 40_000},
        "base64_1mb": {"text": base64.b64encode(secrets.token_bytes(750_000)).decode()},
        "media_random_1mib": {"content": [{"type": "image", "mimeType": "image/png",
                                           "data": random_media}]},
        "media_text_1mib": {"contents": [{"uri": "file:///notes.txt",
                                          "mimeType": "text/plain", "blob": text_media}]},
    }


def main() -> None:
    parsed = harness.parser(__doc__ or "")
    parsed.add_argument("--src", help="another checkout's src directory, measured instead")
    options = parsed.parse_args()
    sys.path.insert(0, str(Path(options.src).resolve() if options.src else ROOT / "src"))
    from proctor.oversight.guard import OutputGuard

    rounds = harness.sized(options, full=15, quick=5, smoke=1)
    load = harness.load_average()
    value = "tok_" + secrets.token_urlsafe(24)  # made at run time
    guard = OutputGuard(known_secrets=[value], detect_high_entropy=True)
    shapes = _shapes(value)
    found = guard.scan(shapes["media_text_1mib"]).counts().get("known_secret", 0)
    if found != 3:  # the case measures finding them: it must
        raise SystemExit(f"media_text_1mib: {found} secrets found, 3 hidden")
    variants = {name: (guard.scan, [shape]) for name, shape in shapes.items()}
    measured = harness.measure(variants, rounds, warmup=1)
    report: dict[str, Any] = {"bench": "guard", "mode": harness.mode(options),
                              "src": options.src or "this checkout"}
    for name, latency in measured.items():
        cpu_ms = latency.cpu_p50_us / 1000
        print(f"{name:18} cpu p50 {cpu_ms:9.2f} ms")
        report[f"{name}_cpu_ms"] = round(cpu_ms, 3)
    report["machine"] = harness.machine(load)
    harness.print_json_line(report)


if __name__ == "__main__":
    main()
