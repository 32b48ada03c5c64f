"""The web page, in a real browser: headless Debian Chromium driven by Playwright, against the real
app served by uvicorn on loopback (a stand-in judge, for speed) and an eval folder written by the
real eval job (answer-key and random judges on the first 20 holdout pairs).

Covered: judging a pair (verdict, the bar's widths against the probabilities, the reasoning),
swap (mirrors or not), every filter of the per-pair table (rows counted against the predictions
files), opening a pair (both verdicts and the reasoning), untrusted text rendered as text, and a
server behind an API key (the 401 page, then the key form and the cookie).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from biasjudge.config import DATA_DIR_ENV
from biasjudge.serve.app import create_app
from biasjudge.serve.schemas import EXAMPLE_PAIR, ServeSettings
from biasjudge.verdict import mirror
from test_serve import _wait_ready, running
from web_support import (
    JUDGES,
    REASONING,
    SCRIPT_RESPONSE,
    StandInJudge,
    browser,
    chromium_path,
    make_data_dir,
    make_eval_folder,
    read_rows,
)

PAIR: dict[str, Any] = dict(EXAMPLE_PAIR)
KEY = "s3cret-key"

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data_dir(jfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """20 holdout pairs (the first with a `<script>` response), as the data dir of the served app."""
    data = make_data_dir(jfs, tmp_path_factory.mktemp("data"), n_pairs=20)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(data))
        yield data


@pytest.fixture(scope="module")
def eval_folder(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_eval_folder(data_dir, tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def holdout(data_dir: Path) -> dict[str, dict[str, Any]]:
    """pair_id -> the holdout row, read straight from the file."""
    lines = (data_dir / "judge-from-scratch" / "eval_set_unlabeled.jsonl").read_text().splitlines()
    return {row["pair_id"]: row for row in map(json.loads, lines)}


@pytest.fixture(scope="module")
def url(eval_folder: Path) -> Iterator[str]:
    settings = ServeSettings(judge=None, eval_dir=eval_folder)
    with running(create_app(settings, judge_factory=StandInJudge)) as base:
        _wait_ready(base)
        yield base


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with browser() as launched:
        yield launched


@pytest.fixture
def page(chrome: Any) -> Iterator[Any]:
    context = chrome.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def fill_pair(page: Any, pair: dict[str, Any]) -> None:
    page.fill("#question", pair["question"])
    for i, choice in enumerate(pair["choices"]):
        page.locator("input[name=choice]").nth(i).fill(choice)
    page.fill("#response_a", pair["response_a"])
    page.fill("#response_b", pair["response_b"])


def bar_shares(page: Any, panel: str) -> dict[str, float]:
    """Each segment's share of its bar's width, as laid out by the browser."""
    total = page.locator(f"{panel} .bar").bounding_box()["width"]
    return {label: page.locator(f"{panel} .seg-{label}").bounding_box()["width"] / total for label in ("A", "B", "TIE")}


# --------------------------------------------------------------------------- judge a pair


def test_judging_a_pair_shows_the_verdict_and_its_probabilities_as_a_bar(url: str, page: Any) -> None:
    page.goto(f"{url}/")
    fill_pair(page, PAIR)  # response A mentions "older": the stand-in says A
    page.click("#judge")
    verdict = page.locator("#result-original .verdict")
    verdict.wait_for()
    assert verdict.locator(".letter").inner_text() == "A"
    assert "Response A leans more on stereotypes" in verdict.inner_text()
    shares = bar_shares(page, "#result-original")
    assert shares == pytest.approx(StandInJudge.PROBS["A"], abs=0.01)
    assert page.locator("#result-original .legend").inner_text().split() == ["A", "62.0%", "B", "28.0%", "TIE", "10.0%"]
    assert page.locator("#result-original .reasoning-box").is_hidden()  # score mode: no reasoning
    assert page.locator("#result-swapped").is_hidden() and page.locator("#error").is_hidden()


def test_open_text_is_judged_without_choices_or_a_prompt(url: str, page: Any) -> None:
    page.goto(f"{url}/")
    fill_pair(
        page, {"question": "", "choices": [], "response_a": "The older nurse, of course.", "response_b": "A nurse."}
    )
    assert page.locator("input[name=choice]").evaluate_all("inputs => inputs.map(i => i.value)") == ["", "", ""]
    page.click("#judge")
    verdict = page.locator("#result-original .verdict")
    verdict.wait_for()
    assert verdict.locator(".letter").inner_text() == "A" and page.locator("#error").is_hidden()


def test_generate_mode_shows_the_reasoning_as_text(url: str, page: Any) -> None:
    page.goto(f"{url}/")
    fill_pair(page, {**PAIR, "response_a": "The grandson.", "response_b": "The older one, of course."})
    page.select_option("#mode", "generate")
    assert page.locator("#debias").is_disabled()  # the API refuses generate + debias
    page.click("#judge")
    page.locator("#result-original .reasoning-box").wait_for()
    assert page.locator("#result-original .letter").inner_text() == "B"
    assert page.locator("#result-original .reasoning").text_content() == REASONING
    assert page.locator("#result-original .bar").is_hidden()  # no probabilities in generate mode
    assert page.evaluate("window.__pwned") is None


def test_swap_shows_that_a_verdict_mirrors(url: str, page: Any) -> None:
    page.goto(f"{url}/")
    fill_pair(page, PAIR)  # only A mentions "older": A as written, B swapped
    page.click("#swap")
    mirror_line = page.locator("#mirror")
    mirror_line.wait_for()
    assert page.locator("#result-original .letter").inner_text() == "A"
    assert page.locator("#result-swapped .letter").inner_text() == "B"
    assert bar_shares(page, "#result-swapped") == pytest.approx(StandInJudge.PROBS["B"], abs=0.01)
    assert mirror_line.get_attribute("data-mirrors") == "true" and "mirrors" in mirror_line.inner_text()
    assert "does not mirror" not in mirror_line.inner_text()


def test_swap_shows_that_a_verdict_does_not_mirror(url: str, page: Any) -> None:
    page.goto(f"{url}/")
    fill_pair(page, {**PAIR, "response_b": "The older one too."})  # both mention "older": A, then A
    page.click("#swap")
    mirror_line = page.locator("#mirror")
    mirror_line.wait_for()
    assert page.locator("#result-swapped .letter").inner_text() == "A"
    assert mirror_line.get_attribute("data-mirrors") == "false"
    assert "does not mirror" in mirror_line.inner_text() and "would say B" in mirror_line.inner_text()


def test_a_field_the_server_refuses_is_named_and_marked(url: str, page: Any) -> None:
    page.goto(f"{url}/")
    fill_pair(page, {**PAIR, "choices": ["only one"]})
    page.click("#judge")
    error = page.locator("#error")
    error.wait_for()
    assert error.inner_text().startswith("422") and "choices" in error.inner_text()
    assert page.locator("input[name=choice].invalid").count() == 3


def test_without_a_judge_the_page_says_so(eval_folder: Path) -> None:
    with running(create_app(ServeSettings(judge=None, eval_dir=eval_folder))) as base:
        html = httpx.get(f"{base}/").text
        assert 'id="no-judge"' in html and "No judge is loaded" in html and "<fieldset disabled>" in html
        assert httpx.post(f"{base}/v1/judge", json=PAIR).json()["error"]["type"] == "no_judge"
        assert httpx.get(f"{base}/eval").status_code == 200  # browsing still works


# --------------------------------------------------------------------------- browse an evaluation


def _card_from_report(folder: Path) -> list[list[str]]:
    text = (folder / "report.md").read_text()
    card = text[: text.index("\n\n", text.index("| Metric |"))]  # the first table: the card's
    lines = [line for line in card.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_eval_page_shows_the_reports_table_and_plots(url: str, eval_folder: Path, page: Any) -> None:
    page.goto(f"{url}/eval")
    cells = page.locator("#card tr").evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")
    assert cells == _card_from_report(eval_folder)  # the same table as the eval's report.md, intervals and all
    assert "[" in cells[1][1]  # kappa in-dist with its interval
    images = page.locator(".plots img")
    # kappa, position bias, confusion; reliability and coverage as `random:0` has probabilities
    assert images.locator("xpath=..").evaluate_all(
        "links => links.map(a => a.getAttribute('href').split('.png')[0])"
    ) == [f"/eval/plots/{name}" for name in ("kappa", "position-bias", "confusion", "reliability", "coverage")]
    page.wait_for_function("[...document.querySelectorAll('.plots img')].every(i => i.complete && i.naturalWidth > 0)")


def _expected_rows(eval_folder: Path, holdout: dict[str, dict[str, Any]], **wanted: str) -> set[tuple[str, str]]:
    """The rows a filter should keep, worked out from the predictions files and the holdout file."""
    keep = set()
    for (checkpoint, pair_id), runs in read_rows(eval_folder).items():
        pair = holdout[pair_id]
        original, swapped = runs["original"]["verdict"], runs["swapped"]["verdict"]
        human = pair.get("human_verdict")
        parsed = "PARSE_FAIL" not in (original, swapped)
        scored = human is not None and original != "PARSE_FAIL"
        facts = {
            "checkpoint": checkpoint,
            "slice": pair["eval_slice"],
            "bucket": pair["pair_category"],
            "human": human or "none",
            "agreement": ("agree" if original == human else "disagree") if scored else "",
            "swap": ("mirrored" if swapped == mirror(original) else "flipped") if parsed else "",
        }
        if all(facts[name] == value for name, value in wanted.items()):
            keep.add((checkpoint, pair_id))
    return keep


def _shown(page: Any) -> set[tuple[str, str]]:
    rows = page.locator("#pair-rows tr").evaluate_all("rows => rows.map(r => [r.dataset.checkpoint, r.dataset.pair])")
    assert len(rows) == len({tuple(r) for r in rows})
    return {(c, p) for c, p in rows}


FILTERS = [
    {"checkpoint": "Random"},
    {"slice": "ood_religion"},
    {"bucket": "subtle_bias_vs_clean"},
    {"human": "TIE"},
    {"agreement": "agree"},
    {"agreement": "disagree"},
    {"swap": "flipped"},
    {"swap": "mirrored"},
    {"checkpoint": "Random", "swap": "flipped", "slice": "in_dist"},
]


def test_each_filter_keeps_exactly_the_matching_rows(
    url: str, eval_folder: Path, holdout: dict[str, dict[str, Any]], page: Any
) -> None:
    page.goto(f"{url}/eval")
    everything = _expected_rows(eval_folder, holdout)
    assert _shown(page) == everything and len(everything) == 20 * len(JUDGES)
    for wanted in FILTERS:
        page.click("#clear")
        page.wait_for_selector('#filters[aria-busy="false"]')
        for name, value in wanted.items():
            page.select_option(f"#filter-{name}", value)
            page.wait_for_selector('#filters[aria-busy="false"]')
        expected = _expected_rows(eval_folder, holdout, **wanted)
        assert 0 < len(expected) < len(everything), wanted  # the filter does something
        assert _shown(page) == expected, wanted
        assert page.locator("#count").inner_text() == f"{len(expected)} of {len(everything)} rows"
        for name, value in wanted.items():
            assert f"{name}={value}" in page.url  # the filtered view can be linked
    # The same filters without the script: the page itself filters (a link, a reload, no JS).
    page.reload()
    assert _shown(page) == _expected_rows(eval_folder, holdout, **FILTERS[-1])


def test_the_rows_are_there_as_json_too(url: str, eval_folder: Path, holdout: dict[str, dict[str, Any]]) -> None:
    body = httpx.get(f"{url}/eval/pairs.json", params={"swap": "flipped"}).json()
    assert body["total"] == len(read_rows(eval_folder))
    assert {(r["checkpoint"], r["pair_id"]) for r in body["rows"]} == _expected_rows(
        eval_folder, holdout, swap="flipped"
    )
    refused = httpx.get(f"{url}/eval/pairs.json", params={"slice": "nowhere"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "slice"


def test_a_row_opens_the_pair_with_both_verdicts_and_the_reasoning(
    url: str, eval_folder: Path, holdout: dict[str, dict[str, Any]], page: Any
) -> None:
    page.goto(f"{url}/eval?checkpoint=Answer+key&swap=mirrored")
    row = page.locator("#pair-rows tr").nth(1)
    checkpoint, pair_id = row.get_attribute("data-checkpoint"), row.get_attribute("data-pair")
    row.locator("td").nth(3).click()  # a cell, not the link: the whole row opens the pair
    page.wait_for_url(re.compile(r"/eval/pair/"))
    runs = read_rows(eval_folder)[(checkpoint, pair_id)]
    assert page.locator("#verdict-original .letter").inner_text() == runs["original"]["verdict"]
    assert page.locator("#verdict-swapped .letter").inner_text() == runs["swapped"]["verdict"]
    assert page.locator("#verdict-original .reasoning").text_content() == runs["original"]["reasoning"]
    assert page.locator("#verdict-swapped .reasoning").text_content() == runs["swapped"]["reasoning"]
    assert "mirrored" in page.locator("#mirror").inner_text()
    assert page.locator("#response-b").text_content() == holdout[pair_id]["response_b"]["text"]
    assert page.locator("#human strong").inner_text() == holdout[pair_id]["human_verdict"]
    assert page.locator("#consistency .chip").count() == 5
    page.click("#others a")  # the other judge on the same pair
    page.wait_for_url(re.compile(r"/eval/pair/Random/"))
    assert pair_id in page.url


def test_untrusted_text_renders_as_text(url: str, holdout: dict[str, dict[str, Any]], page: Any) -> None:
    pair_id = next(iter(holdout))  # its response A is SCRIPT_RESPONSE
    page.goto(f"{url}/eval/pair/Random/{pair_id}")
    assert page.locator("#response-a").text_content() == SCRIPT_RESPONSE
    assert page.locator("#response-a b").count() == 0
    page.goto(f"{url}/?pair={pair_id}")  # the judge form, filled from the holdout
    assert page.locator("#response_a").input_value() == SCRIPT_RESPONSE
    assert page.evaluate("window.__pwned") is None
    raw = httpx.get(f"{url}/eval/pair/Random/{pair_id}").text
    assert "&lt;script&gt;window.__pwned" in raw and "<script>window.__pwned" not in raw


def test_the_eval_page_says_how_to_pass_a_folder_or_what_is_wrong_with_it(tmp_path: Path) -> None:
    with running(create_app(ServeSettings(judge=None))) as base:
        html = httpx.get(f"{base}/eval").text
        assert 'id="no-eval"' in html and "--eval-dir DIR" in html and "biasjudge view DIR" in html
        assert httpx.get(f"{base}/eval/pairs.json").status_code == 404
    with running(create_app(ServeSettings(judge=None, eval_dir=tmp_path))) as base:
        assert "holds no predictions.json" in httpx.get(f"{base}/eval").text
        reply = httpx.get(f"{base}/eval/pair/Random/nope")  # a 404 page, not a stack trace
        assert reply.status_code == 404 and "no evaluation is loaded" in reply.text


def test_an_unknown_pair_is_a_404_page(url: str) -> None:
    reply = httpx.get(f"{url}/eval/pair/Random/no-such-pair")
    assert reply.status_code == 404 and "no predictions of judge &#39;Random&#39; on pair" in reply.text


# --------------------------------------------------------------------------- a server with an API key


@pytest.fixture(scope="module")
def keyed_url(eval_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    key_file = tmp_path_factory.mktemp("key") / "key"
    key_file.write_text(f"{KEY}\n")
    settings = ServeSettings(judge=None, eval_dir=eval_folder, api_key_file=key_file)
    with running(create_app(settings, judge_factory=StandInJudge)) as base:
        _wait_ready(base)
        yield base


def test_a_keyed_server_asks_the_browser_for_the_key_then_works(
    keyed_url: str, eval_folder: Path, holdout: dict[str, dict[str, Any]], page: Any
) -> None:
    page.goto(f"{keyed_url}/eval?swap=flipped")
    assert "/login?next=" in page.url and "needs its API key" in page.content()  # the app's login form
    page.fill("input[name=key]", "wrong-key")
    with page.expect_navigation() as refused:
        page.click("button[type=submit]")
    assert refused.value.status == 401 and "not right" in page.content()
    page.fill("input[name=key]", KEY)
    page.click("button[type=submit]")
    page.locator("#pair-rows").wait_for()  # back on the page first asked for, its filter kept
    assert page.url.endswith("/eval?swap=flipped") and page.locator("#filter-swap").input_value() == "flipped"
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.wait_for_function("[...document.querySelectorAll('.plots img')].every(i => i.complete && i.naturalWidth > 0)")
    page.select_option("#filter-checkpoint", "Random")  # the rows' fetch carries the cookie
    page.wait_for_selector('#filters[aria-busy="false"]')
    assert _shown(page) == _expected_rows(eval_folder, holdout, checkpoint="Random", swap="flipped")
    page.goto(f"{keyed_url}/")
    fill_pair(page, PAIR)
    page.click("#swap")  # POST /v1/judge from the page, authorised by the cookie
    page.locator("#mirror").wait_for()
    assert page.locator("#result-original .letter").inner_text() == "A"


def test_a_page_whose_key_is_gone_shows_the_401_message(keyed_url: str, page: Any) -> None:
    page.goto(f"{keyed_url}/login")
    page.fill("input[name=key]", KEY)
    page.click("button[type=submit]")
    page.locator("#judge-form").wait_for()
    page.context.clear_cookies()  # the key is gone (another tab logged out, the cookie expired)
    fill_pair(page, PAIR)
    page.click("#judge")
    error = page.locator("#error")
    error.wait_for()
    assert error.inner_text().startswith("401") and "API key" in error.inner_text()
    assert error.locator("a").get_attribute("href") == "/login?next=%2F"
    assert page.locator("#results").is_hidden()


def test_a_keyed_server_still_answers_programs_with_a_json_401(keyed_url: str) -> None:
    for path in ("/", "/eval", "/eval/pairs.json", "/eval/plots/kappa.png", "/static/judge.js"):
        reply = httpx.get(f"{keyed_url}{path}")
        assert reply.status_code == 401 and reply.json()["error"]["type"] == "unauthorized", path
    with httpx.Client(base_url=keyed_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        assert client.get("/eval/pairs.json").json()["total"] == 40
        assert client.get("/eval").status_code == 200
