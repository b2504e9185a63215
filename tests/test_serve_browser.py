"""The web app in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, installed by .ci/run) drives the page of `stpr-run --serve` on a looping
live MJPEG source, as a person teaching the device from a phone would."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from live_server import MjpegServer
from serve_helpers import Served, top1_counts

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not "
                                   "installed (.ci/run installs them: apt-get install chromium chromium-driver)")


def _browser(width: int, height: int):  # noqa: ANN202 (a selenium driver)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _until(what, timeout: float, step: float = 0.2):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


@needs_browser
def test_teach_a_new_action_from_the_page(head_demo, tmp_path):
    from selenium.webdriver.common.by import By

    bundle = head_demo[0]
    from stpr.train.data.synthetic import SyntheticActions
    test = SyntheticActions("test", clips_per_class=4, seed=3)
    c = test.classes.index("cross_moving_right")
    frames = [f[..., ::-1] for i, t in enumerate(test.targets) if t == c for f in test.raw_clip(i)]
    shots = Path(os.environ.get("STPR_SCREENSHOTS", tmp_path))
    with MjpegServer(frames, fps=25) as cam, Served(["--bundle", bundle, cam.url]) as s:
        page = _browser(1280, 900)
        try:
            page.get(f"http://127.0.0.1:{s.port}/")
            view = page.find_element(By.ID, "view")
            _until(lambda: int(view.get_attribute("data-frames")) >= 5, 60)  # the live view updates
            classes = lambda: dict(page.execute_script(  # noqa: E731 (one read: the list may be redrawn)
                "return [...document.querySelectorAll('#classes li')].map(li => [li.dataset.name, li.dataset.origin])"))
            assert len(_until(classes, 30)) == 12 and set(classes().values()) == {"trained"}
            assert _until(lambda: page.execute_script("return document.querySelectorAll('#top li').length"), 30)

            page.find_element(By.ID, "teach-name").send_keys("cross right")
            windows = page.find_element(By.ID, "teach-windows")
            windows.clear()
            windows.send_keys("8")
            page.find_element(By.ID, "record").click()
            assert "starting in" in page.find_element(By.ID, "record").text  # the countdown
            job = page.find_element(By.ID, "job")
            _until(lambda: job.get_attribute("data-state") == "recording", 30)
            progress = page.find_element(By.ID, "job-progress")
            seen = {int(progress.get_attribute("value"))}
            while job.get_attribute("data-state") == "recording":
                seen.add(int(progress.get_attribute("value")))
                time.sleep(0.05)
            assert len(seen) >= 3, seen  # the progress moved while it recorded
            _until(lambda: job.get_attribute("data-state") == "done", 120)
            assert _until(lambda: classes().get("cross right") == "device", 30)
            # the next predictions on this source name it
            label = lambda: page.execute_script(  # noqa: E731
                "const l = document.querySelector('#top li .label'); return l && l.textContent")
            assert _until(lambda: label() == "cross right", 30)
            page.save_screenshot(str(shots / "web-teach.png"))
            after = s.get("/api/events?after=0")[1]["events"]
            swap = max(e["seq"] for e in after if e.get("event") == "swap")
            counts = top1_counts([e for e in after if e["seq"] > swap])
            assert max(counts, key=counts.get) == "cross right", counts

            remove = page.find_element(By.CSS_SELECTOR, '#classes li[data-name="cross right"] button')
            remove.click()
            page.switch_to.alert.accept()
            _until(lambda: "cross right" not in classes(), 120)
            assert len(classes()) == 12
            assert not page.find_element(By.ID, "error").is_displayed()
        finally:
            page.quit()
        phone = _browser(390, 844)
        try:
            phone.get(f"http://127.0.0.1:{s.port}/")
            _until(lambda: int(phone.find_element(By.ID, "view").get_attribute("data-frames")) >= 3, 60)
            # usable at phone width: one column, nothing wider than the screen
            assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            phone.save_screenshot(str(shots / "web-phone.png"))
        finally:
            phone.quit()
