#!/usr/bin/env python3
"""Run the README's shell blocks, as a newcomer would, and fail on the first
command that fails.

Every ```sh block in README.md must be preceded by a marker comment that says
what to do with it, so that a new block is never silently unchecked:

    <!-- readme-check: run -->                  run it in the repository root
    <!-- readme-check: run in DIR -->           run it in DIR (relative to the root)
    <!-- readme-check: skip (REASON) -->        do not run it; REASON says why
                                                (hardware, slow, run by .ci/run itself)

Each block runs as one `bash -euo pipefail` script, so a failing command
stops it with its exit code. Exact figures the README states about a block's
output are checked too: comment lines right after the block,

    <!-- readme-check: expect "TEXT" -->

each require TEXT to appear in what the block printed (stdout and stderr), so
a figure that drifts fails CI rather than going stale. Usage: `python3 scripts/readme-check.py
[README]`; .ci/run calls it after the test command.
"""
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*readme-check:\s*(run(?:\s+in\s+(?P<dir>\S+))?|skip\s*\((?P<why>[^)]+)\))\s*-->")
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
EXPECT = re.compile(r'<!--\s*readme-check:\s*expect\s+"(?P<text>[^"]+)"\s*-->')


def blocks(text):
    """(line number, marker match or None, block body, expected texts) for every sh block."""
    for m in BLOCK.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        expect = []
        for line in text[m.end() :].lstrip("\n").splitlines():
            e = EXPECT.fullmatch(line.strip())
            if not e:
                break
            expect.append(e.group("text"))
        yield text.count("\n", 0, m.start()) + 1, marker, m.group(1), expect


def main():
    readme = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "README.md"
    text = readme.read_text()
    unmarked = [line for line, marker, _, _ in blocks(text) if marker is None]
    if unmarked:
        sys.exit(f"{readme}: sh blocks without a readme-check marker at lines {unmarked}")
    ran = skipped = 0
    checked = 0
    for line, marker, body, expect in blocks(text):
        if marker.group("why"):
            print(f"readme-check: line {line}: skipped ({marker.group('why')})", flush=True)
            skipped += 1
            continue
        cwd = ROOT / (marker.group("dir") or ".")
        print(f"readme-check: line {line}: running in {cwd.relative_to(ROOT) or '.'}", flush=True)
        start = time.monotonic()
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        sys.stdout.write(result.stdout)
        if result.returncode != 0:
            sys.exit(f"readme-check: the block at {readme.name} line {line} failed (exit {result.returncode})")
        missing = [e for e in expect if e not in result.stdout]
        if missing:
            sys.exit(f"readme-check: the block at {readme.name} line {line} did not print {missing}: a figure drifted")
        checked += len(expect)
        print(f"readme-check: line {line}: ok in {time.monotonic() - start:.0f} s", flush=True)
        ran += 1
    print(f"readme-check: {ran} blocks ran, {skipped} skipped (marked), {checked} stated figures found, no failure")


if __name__ == "__main__":
    main()
