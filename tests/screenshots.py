"""Screenshots of the web page for the README: `python tests/screenshots.py [--out docs/screenshots]`.

Serves the real app and saves judge.png, eval.png and pair.png from headless Debian Chromium.
By default it needs nothing but the data folder (`../shared/data` or $BIASJUDGE_DATA_DIR): a
stand-in judge, and an eval folder made by the real eval job with the answer-key and random
judges on the first 20 holdout pairs (what tests/test_web.py uses). `--judge SPEC` serves a real
judge instead (e.g. `llamacpp:embedded`), `--eval-dir DIR` browses an existing eval folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from biasjudge.config import DATA_DIR_ENV
from biasjudge.eval.run import jfs_folder
from biasjudge.serve.app import create_app
from biasjudge.serve.schemas import EXAMPLE_PAIR, ServeSettings
from test_serve import _wait_ready, running
from web_support import StandInJudge, browser, make_data_dir, make_eval_folder

WIDTH = 1440
ALL_IMAGES_LOADED = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"


def _top(height: int) -> dict[str, float]:
    return {"x": 0, "y": 0, "width": WIDTH, "height": height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "screenshots")
    parser.add_argument("--judge", help="a judge spec to serve (default: a stand-in judge)")
    parser.add_argument("--eval-dir", type=Path, help="an eval folder to browse (default: one made here)")
    parser.add_argument("--filter", default="agreement=disagree", help="the eval page's filters (a query string)")
    parser.add_argument("--max-height", type=int, default=2600, help="cut the eval page's screenshot here (pixels)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.eval_dir
        if folder is None:
            data = make_data_dir(jfs_folder(None), Path(tmp) / "data", n_pairs=20)
            folder = make_eval_folder(data, Path(tmp) / "eval")
            os.environ[DATA_DIR_ENV] = str(data)
        settings = ServeSettings(judge=args.judge, eval_dir=folder)
        app = create_app(settings, judge_factory=None if args.judge else StandInJudge)
        with running(app) as url, browser() as chrome:
            _wait_ready(url, timeout=600)
            page = chrome.new_page(viewport={"width": WIDTH, "height": 900}, device_scale_factor=1)
            page.set_default_timeout(300_000)
            page.goto(f"{url}/")
            page.fill("#question", str(EXAMPLE_PAIR["question"]))
            for i, choice in enumerate(EXAMPLE_PAIR["choices"]):  # type: ignore[arg-type]
                page.locator("input[name=choice]").nth(i).fill(choice)
            page.fill("#response_a", str(EXAMPLE_PAIR["response_a"]))
            page.fill("#response_b", str(EXAMPLE_PAIR["response_b"]))
            page.click("#swap")
            page.wait_for_selector("#mirror:not([hidden])")
            page.screenshot(path=str(args.out / "judge.png"), full_page=True)

            page.goto(f"{url}/eval?{args.filter}#pairs")
            page.wait_for_function(ALL_IMAGES_LOADED)
            height = min(page.evaluate("document.documentElement.scrollHeight"), args.max_height)
            page.screenshot(path=str(args.out / "eval.png"), full_page=True, clip=_top(height))

            page.locator("#pair-rows tr").first.click()
            page.wait_for_selector("#verdict-swapped")
            page.screenshot(path=str(args.out / "pair.png"), full_page=True)
    for name in ("judge", "eval", "pair"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
