"""The annotation page end to end in headless Chromium (Selenium): label, go back, reload, train.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package; skipped, saying
which is missing, without them.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from star import loop
from star.annotation.queries import open_round, query_row, write_batch
from star.annotation.server import AnnotationServer, make_server
from star.config import build_config, dump_config, load_config
from star.store.labels import LabelStore
from star.store.runs import RunDir
from star.tasks import build_task

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> 12'


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            pytest.skip(f"{path} is missing: apt-get install -y chromium chromium-driver (package {package})")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the selenium package is missing: pip install selenium")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="star-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def serve(run_dir: Path) -> AnnotationServer:
    server = make_server(run_dir)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def wait_text(driver, element_id: str, needle: str, timeout: float = 10.0) -> str:
    """Wait until the element's text contains `needle`; return the text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: needle in d.find_element(By.ID, element_id).text)
    return driver.find_element(By.ID, element_id).text


def stored(run_dir: Path) -> dict[str, tuple[str, str, int]]:
    store = LabelStore(RunDir(run_dir).labels_path)
    try:
        return {x.example_id: (x.answer, x.annotator, x.round) for x in store.all()}
    finally:
        store.close()


def test_label_three_items_reload_and_train(browser, tiny_run_config: dict) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cfg = copy.deepcopy(tiny_run_config)
    cfg["al"]["annotator"] = "human"
    run_dir = Path(cfg["output_dir"])
    loop.run(cfg, show_progress=False)  # stops for round 0's labels
    task = build_task(load_config(RunDir(run_dir).config_path).task)
    gold = {e.id: task.gold_answer(e.answer) for e in task.load("pool")}
    server = serve(run_dir)
    try:
        browser.get(server.url)
        wait_text(browser, "progress-text", "Item 1 of 4 · 0 labelled")
        given = {}
        for k in range(3):
            item = browser.find_element(By.ID, "item-id").text.removeprefix("· ")
            answer = XSS if k == 1 else gold[item]
            browser.find_element(By.ID, "answer").send_keys(answer, Keys.ENTER)
            wait_text(browser, "progress-text", f"{k + 1} labelled")
            assert stored(run_dir)[item] == (answer, "human:web", 0)  # committed before the page moved on
            given[item] = answer
        assert wait_text(browser, "progress-text", "Item 4 of 4")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)  # back to item 3
        assert wait_text(browser, "progress-text", "Item 3 of 4")
        browser.find_element(By.ID, "back").click()  # and item 2, the one with markup
        assert wait_text(browser, "committed", "Saved: ") == f"Saved: {XSS}  (by human:web)"
        assert browser.find_elements(By.CSS_SELECTOR, "#committed *") == []
        assert not browser.find_element(By.ID, "answer").is_displayed()

        browser.refresh()
        wait_text(browser, "progress-text", "Item 4 of 4 · 3 labelled")  # opens at the first unanswered item
        for n, (item, answer) in enumerate(given.items()):
            browser.find_elements(By.CSS_SELECTOR, "#strip button")[n].click()
            assert wait_text(browser, "item-id", item)
            assert browser.find_element(By.ID, "committed").text == f"Saved: {answer}  (by human:web)"
        assert browser.execute_script("return window.__xss") is None
        assert browser.execute_script("return document.querySelectorAll('script').length") == 1
    finally:
        server.shutdown()
        server.server_close()
    assert {i: v[0] for i, v in stored(run_dir).items()} == given
    remaining = open_round(run_dir).remaining()
    assert len(remaining) == 1
    store = LabelStore(RunDir(run_dir).labels_path)
    store.add(remaining[0]["id"], gold[remaining[0]["id"]], "human:test", 0)
    store.close()
    metrics = loop.run(resume=run_dir, show_progress=False)  # the run trains on the page's labels
    assert metrics[0]["labels"] == 4 and metrics[0]["acquired"] == 4


def choice_run(folder: Path) -> tuple[Path, list[str]]:
    """A run with a yes/no task waiting for round 0's three labels (no model needed to serve it)."""
    data = folder / "data"
    data.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        rows = [{"question": f"Is {i} odd? <b>bold?</b>", "answer": "yes" if i % 2 else "no"} for i in range(6)]
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = build_config({"output_dir": str(folder / "run"), "al": {"initial": 3, "query": 1, "rounds": 2, "annotator": "human"},
                        "task": {"name": "jsonl", "path": str(data), "answer_type": "choice", "choices": ["yes", "no"]}})
    run = RunDir.create(cfg.output_dir)
    run.config_path.write_text(dump_config(cfg), encoding="utf-8")
    task = build_task(cfg.task)
    pool = task.load("pool")[:3]
    write_batch(run, 0, "query", [query_row(task, 0, e.id, e.question, "yes", 0.5) for e in pool])
    return run.path, [e.id for e in pool]


def test_choice_shortcuts_and_named_annotator(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run_dir, ids = choice_run(tmp_path)
    server = serve(run_dir)
    try:
        browser.get(server.url + "?annotator=alice")
        wait_text(browser, "progress-text", "Item 1 of 3 · 0 labelled")
        assert browser.find_element(By.ID, "question").text == "Is 0 odd? <b>bold?</b>"
        assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, "button.choice")] == ["1/y yes", "2/n no"]
        body = browser.find_element(By.TAG_NAME, "body")
        for k, (key, expected) in enumerate([("2", "no"), ("y", "yes"), ("1", "yes")]):
            body.send_keys(key)
            assert browser.find_element(By.CSS_SELECTOR, "button.choice.picked").text.endswith(expected)
            body.send_keys(Keys.ENTER)
            wait_text(browser, "progress-text", f"{k + 1} labelled")
        assert "star run --resume" in wait_text(browser, "done-text", "All 3 items are labelled")
        body.send_keys(Keys.ARROW_LEFT)
        assert wait_text(browser, "progress-text", "Item 2 of 3")
        assert browser.find_element(By.ID, "committed").text == "Saved: yes  (by human:alice)"
    finally:
        server.shutdown()
        server.server_close()
    assert stored(run_dir) == {ids[0]: ("no", "human:alice", 0), ids[1]: ("yes", "human:alice", 0),
                               ids[2]: ("yes", "human:alice", 0)}
