"""The quickstart's wall time by phase, the AUC it reaches against the generator's best, and the streaming
restart downtime (MODEL_VALIDATED of v2 → the first impression scored by v2, committed).

Runs `make demo`'s runner (the notebook in a real kernel) ``--runs`` times (default 1; the figures in
docs/benchmarks.md say how many) and prints the median of each figure:

    .venv/bin/python bench/quickstart_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import run_quickstart  # noqa: E402 -- the runner, shared: same notebook, same summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results = []
    for attempt in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="aiflow-quickstart-bench-") as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            started = time.monotonic()
            ok, nb = run_quickstart.run_notebook(home)
            if not ok:
                print(f"run {attempt + 1} failed", file=sys.stderr)
                return 1
            summary = run_quickstart.story_summary(home, nb)
            summary["phases"]["whole notebook"] = time.monotonic() - started
            results.append(summary)
            print(f"-- run {attempt + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["phases"].items()),
                  flush=True)
    print(f"\n== quickstart, median of {len(results)} run(s)")
    print("| phase | seconds |\n|---|---|")
    for name in results[0]["phases"]:
        values = [r["phases"][name] for r in results if name in r["phases"]]
        print(f"| {name} | {statistics.median(values):.1f} |")
    best = statistics.median(r["best_auc"] for r in results)
    for number in (1, 2):
        aucs = [v["metrics"]["auc"] for r in results for v in r["versions"] if v["version"] == number]
        print(f"| AUC of v{number} (best achievable {best:.4f}) | {statistics.median(aucs):.4f} |")
    print(f"| impressions missing / duplicated | {max(r['missing'] for r in results)} / "
          f"{max(r['duplicated'] for r in results)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
