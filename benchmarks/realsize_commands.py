"""Time and peak memory of each command of the real-size tier (the documented commands on full-size stand-ins).

    OMP_NUM_THREADS=2 python benchmarks/realsize_commands.py [--standins DIR] [--workdir DIR]

Runs the same command lines as `make test-realsize` (`tests/support/doc_commands.py`) one after the other
in a fresh folder of user files and prints, per command, its wall time and the peak resident memory of
its process (from `wait4`), then the totals. Stops at the first failing command, printing its error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The tier's support code lives beside the tests (it writes pickles, so it is not part of the package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.doc_commands import REPO, folder_for, runnable, tier_commands, tier_env, user_files  # noqa: E402
from support.standins import ensure_standins  # noqa: E402


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, peak RSS in GiB, and the tail of stderr of one command."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 2**20, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standins", type=Path, default=REPO / ".cache" / "standins")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    args = parser.parse_args()
    t0 = time.perf_counter()
    ensure_standins(args.standins)
    print(f"stand-ins ready in {time.perf_counter() - t0:.0f} s ({args.standins})")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="mmfs-realsize-"))
    user_files(root)
    env = tier_env(root, args.standins, root / "mmfs-home")
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, folder {root}")
    print(f"{'doc':<15} {'seconds':>8} {'peak GiB':>9}  command")
    total, peak, done = 0.0, 0.0, set()
    for doc, command in tier_commands():
        argv = runnable(command, args.standins)
        if tuple(sorted(argv)) in done:
            continue
        done.add(tuple(sorted(argv)))
        code, seconds, rss, tail = run(argv, folder_for(root, doc), env)
        total, peak = total + seconds, max(peak, rss)
        shown = shlex.join(argv[1:]).replace(str(args.standins) + "/", "")
        print(f"{doc:<15} {seconds:8.0f} {rss:9.2f}  {shown}", flush=True)
        if code:
            print(tail, file=sys.stderr)
            return 1
    print(f"{'total':<15} {total:8.0f} {peak:9.2f}  ({len(done)} commands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
