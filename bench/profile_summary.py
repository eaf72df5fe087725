"""Sample a running Python process with py-spy and summarise where its time goes.

    python bench/profile_summary.py PROFILE.raw [--top 25]

`py_spy_record()` starts `py-spy record --format raw` (collapsed stacks) against a PID we started;
`summarize()` turns the stacks into the share of samples per `file:function`, both *self* (the
function itself was running) and *inclusive* (it was on the stack), and per file. Paths are shown
relative to the project or to site-packages / the standard library.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def py_spy_record(pid: int, duration: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes] | None:
    """Start sampling `pid` for `duration` seconds into `out` (collapsed stacks); None if py-spy is
    not installed (bench/install.sh puts it into the venv)."""
    exe = str(PY_SPY) if PY_SPY.exists() else shutil.which("py-spy")
    if exe is None:
        print("   note: py-spy is not installed: no profile", flush=True)
        return None
    out.parent.mkdir(exist_ok=True)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))),
                             "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def short_path(path: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    root = str(ROOT) + "/"
    if path.startswith(root):
        return path[len(root):]
    m = re.search(r"/lib/python3\.\d+/(.*)$", path)
    if m:
        return "stdlib/" + m.group(1)
    return path.rsplit("/", 1)[-1] if path.startswith("/") else path


def _frames(stack: str) -> list[str]:
    out = []
    for part in stack.split(";"):
        m = _FRAME.match(part.strip())
        if m is None:
            continue  # a process or thread header frame
        out.append(f"{short_path(m.group('file'))}:{m.group('func')}")
    return out


def summarize(raw: Path, top: int = 25) -> str:
    """A text report of the hottest functions and files in py-spy's collapsed-stack output."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    files: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        if not frames:
            continue
        total += n
        self_t[frames[-1]] += n
        files[frames[-1].split(":", 1)[0]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return f"{raw.name}: no samples\n"
    out = [f"{raw.name}: {total} samples"]
    out.append("\nself time (the function itself was running):")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_t.most_common(top)]
    out.append("\ninclusive time of the project's functions (the function was on the stack):")
    ours = [(f, n) for f, n in incl.most_common() if f.startswith(("atom/", "connectors/"))]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in ours[:top]]
    out.append("\nself time by file:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in files.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="summarise a py-spy raw profile")
    ap.add_argument("raw", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    sys.stdout.write(summarize(args.raw, args.top))


if __name__ == "__main__":
    main()
