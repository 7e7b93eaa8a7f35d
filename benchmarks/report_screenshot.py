"""A report as a reader sees it: each report.html opened in a real headless browser at 1400 px.

For every report given it prints whether the page fits the width (no horizontal scroll: its
document's scroll width ≤ the viewport's), how wide its widest table and figure are, and whether
the verdict table comes before the AUC table; and it writes a screenshot of the first screen and
of the whole page beside it (`<report>-1400.png`, `<report>-1400-full.png`, or under --out).

Needs a Chromium (Debian: `apt-get install chromium`) and `pip install playwright` (its browser is
not downloaded: the system's Chromium is used). Exit 1 when a page does not fit.

    python benchmarks/report_screenshot.py docs/results/*/report.html [--out DIR] [--width 1400]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

MEASURE = """() => {
  const widest = (sel) => Math.max(0, ...[...document.querySelectorAll(sel)].map(e => e.getBoundingClientRect().width));
  const heads = [...document.querySelectorAll('h2, h3')].map(h => h.textContent);
  return {
    scroll: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
    table: widest('table'),
    image: widest('img'),
    heads: heads,
    verdict_table_first: (() => {
      const t = [...document.querySelectorAll('table')];
      return t.length > 1 && t[0].textContent.includes('comparison');
    })(),
  };
}"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="folder of the screenshots (default: beside each)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument(
        "--browser", default=shutil.which("chromium") or shutil.which("chromium-browser")
    )
    args = ap.parse_args()
    if not args.browser:
        print("no Chromium found: apt-get install chromium (or give --browser PATH)")
        return 2
    from playwright.sync_api import sync_playwright

    bad = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        for report in args.reports:
            page.goto(report.resolve().as_uri())
            m = page.evaluate(MEASURE)
            fits = m["scroll"] <= m["viewport"]
            bad += not fits
            out = args.out or report.parent
            out.mkdir(parents=True, exist_ok=True)
            stem = report.parent.name if args.out else report.stem
            first, full = out / f"{stem}-{args.width}.png", out / f"{stem}-{args.width}-full.png"
            page.screenshot(path=str(first))
            page.screenshot(path=str(full), full_page=True)
            print(
                f"{report}: {'fits' if fits else 'OVERFLOWS'} {args.width} px (page "
                f"{m['scroll']} px, widest table {m['table']:.0f} px, widest figure "
                f"{m['image']:.0f} px); verdict table first: {m['verdict_table_first']}; "
                f"sections: {', '.join(m['heads'][:6])} …; screenshots {first.name}, {full.name}"
            )
        browser.close()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
