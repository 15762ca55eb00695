"""Summarise py-spy ``--format raw`` (folded) stacks: where the samples go.

``python -m bench.folded FILE [--match TEXT] [--top N]`` prints, for the samples whose stack
contains TEXT (e.g. ``ledger-writer`` or ``gateway/routers/pull.py``), the functions with
the most inclusive samples and the most self samples. Idle samples (py-spy marks waiting
threads only with ``--idle``) are not recorded, so percentages are of busy samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")


def load(path: Path, match: str | None) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stack, n = m.group(1), int(m.group(2))
        if match and match not in stack:
            continue
        out.append((stack.split(";"), n))
    return out


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)" with a package hint
    m = re.match(r"^(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    parts = path.split("/")
    for anchor in ("exchange", "gateway", "bench", "site-packages", "lib"):
        if anchor in parts:
            i = parts.index(anchor)
            path = "/".join(parts[i + 1 :] if anchor in ("site-packages", "lib") else parts[i:])
            break
    return f"{func} ({path})"


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(n for _, n in stacks) or 1
    incl: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    for frames, n in stacks:
        seen = set()
        for f in frames:
            s = _short(f)
            if s not in seen:
                incl[s] += n
                seen.add(s)
        self_[_short(frames[-1])] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--match")
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args()
    print(summarise(load(a.file, a.match), a.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
