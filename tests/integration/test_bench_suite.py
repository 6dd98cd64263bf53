"""The benchmark suite's small CI version runs end to end, so the suite cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_ci_suite_writes_results_and_plots(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "suite.py"), "--ci", "--no-speed", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "python bench/suite.py --ci --no-speed --out" in results
    assert "seeds 1..3, a 10-symbol plan" in results
    for heading in ("## synthetic, queue fill rule", "## synthetic, touch fill rule", "## Targets"):
        assert heading in results, heading
    for strategy in ("market", "smart-LOW", "smart-NORMAL", "smart-HIGH", "lean-spread", "twap",
                     "post-cross", "ref-arrival-mid", "ref-far-touch"):
        assert f"| {strategy} |" in results, strategy
    for image in ("cost_distribution.png", "paired_vs_market.png"):
        data = (tmp_path / image).read_bytes()
        assert data.startswith(PNG_MAGIC), image
        assert len(data) > 10_000, image
        assert f"]({image})" in results
    assert "PASS" in done.stdout or "MISS" in done.stdout
