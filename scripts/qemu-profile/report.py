#!/usr/bin/env python3
"""Where a firmware's instructions go, from insn-hist.c's per-address counts.

    python3 scripts/qemu-profile/report.py ELF HIST                 # top functions
    python3 scripts/qemu-profile/report.py ELF HIST blocks NAME [N]  # NAME's N hottest blocks
    python3 scripts/qemu-profile/report.py ELF HIST listing NAME [MIN]  # NAME's instructions run >= MIN times
"""
import collections
import re
import subprocess
import sys


def load(elf, hist):
    counts, total = {}, 0
    for line in open(hist):
        a, b = line.split()
        if a == "total":
            total = int(b)
        else:
            counts[int(a, 16)] = int(b)
    dis = subprocess.run(["llvm-objdump", "-d", "--no-show-raw-insn", "-C", elf], capture_output=True, text=True).stdout
    func, lines = None, []
    for l in dis.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", l)
        if m:
            if not m.group(2).startswith("$"):
                func = m.group(2)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", l)
        if m and func:
            pc = int(m.group(1), 16)
            lines.append((func, pc, counts.get(pc, 0), m.group(2)))
    return total, lines


def main():
    elf, hist = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "top"
    total, lines = load(elf, hist)
    print("total", total)
    if mode == "top":
        per = collections.Counter()
        for f, _, c, _ in lines:
            per[f] += c
        for f, c in per.most_common(25):
            print(f"{c:>12} {100 * c / max(total, 1):5.1f}%  {f[:150]}")
    elif mode == "listing":
        name, least = sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 1
        for f, pc, c, ins in lines:
            if name in f and c >= least:
                print(f"{pc:8x} {c:>10}  {ins}")
    elif mode == "blocks":
        name, n = sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 15
        blocks, cur = [], None
        for f, pc, c, ins in lines:
            if name not in f or c == 0:
                continue
            if cur and cur[1] == c and pc - cur[3] <= 4:
                cur[2] += 1
                cur[3] = pc
                cur[4].append(ins)
            else:
                cur = [pc, c, 1, pc, [ins]]
                blocks.append(cur)
        print("function total", sum(b[1] * b[2] for b in blocks))
        for b in sorted(blocks, key=lambda b: -b[1] * b[2])[:n]:
            print(f"{b[0]:x} count={b[1]} len={b[2]} total={b[1] * b[2]}  first: {b[4][0]} | last: {b[4][-1]}")


if __name__ == "__main__":
    main()
