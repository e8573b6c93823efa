"""`pumpctl web` in a real browser: Debian's chromium, headless, driven by
selenium through chromium-driver (`make browser` installs both), against a
fresh emulated pump. Screenshots of each screen go to build/web-screenshots/
(the README's come from there). Without a browser these tests skip with the
reason; with CI=true they fail instead."""
import base64
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pumpctl.fw import link_commands as lc

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "web-screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MIN_MS = 60_000
# Chromium on a machine without network: these flags, or it waits on the network (docs/web.md).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1024,1200")


def missing():
    if not os.path.exists(CHROMIUM) or not os.path.exists(DRIVER):
        return ("no chromium/chromedriver at %s and %s: `make browser` installs Debian's chromium and "
                "chromium-driver (as root, with apt)" % (CHROMIUM, DRIVER))
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make setup)"
    return None


WHY = missing()
if WHY and os.environ.get("CI") != "true":
    pytestmark = pytest.mark.skip(reason="browser tests: " + WHY)


@pytest.fixture(scope="module")
def driver():
    if WHY:
        pytest.fail("CI=true and no browser for the web tests: %s" % WHY)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="pumpctl-web-chromium-")
    for f in FLAGS + ("--user-data-dir=%s" % profile,):
        opts.add_argument(f)
    d = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(d, name):
    """A full-page PNG of the screen in build/web-screenshots/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    png = d.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})["data"]
    (SHOTS / ("%s.png" % name)).write_bytes(base64.b64decode(png))


def by_id(d, i):
    from selenium.webdriver.common.by import By
    return d.find_element(By.ID, i)


def body(d):
    from selenium.webdriver.common.by import By
    return " ".join(d.find_element(By.TAG_NAME, "body").text.split())


def submit(d, i):
    """Clicks the button `i` and waits for the page it loads."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    page = d.find_element(By.TAG_NAME, "html")
    by_id(d, i).click()

    def replaced(_):
        # The old page is gone. While it is being replaced chromedriver may
        # say so with an inspector error ("node does not belong to the
        # document") rather than a stale-element one: both mean gone.
        try:
            page.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(d, 20).until(replaced)


def fill(d, i, value):
    el = by_id(d, i)
    el.clear()
    el.send_keys(value)


def connect(d, base, guard, role="clinician"):
    from selenium.webdriver.common.by import By
    d.get("%s/?token=%s" % (base, guard.token))
    assert "/connect" in d.current_url and "token" not in d.current_url
    d.find_element(By.CSS_SELECTOR, "input[name=role][value=%s]" % role).click()
    if role == "clinician":
        shot(d, "connect")
    submit(d, "connect")


def test_connect_interrogate_program_review_and_confirm(driver, served):
    base, pump, guard, _ = served
    connect(driver, base, guard)
    assert "/interrogate" in driver.current_url
    t = body(driver)
    assert "morphine 10 mg/mL" in t and "20.000 mL of 20.000 mL" in t and "battery 3200 mV" in t
    shot(driver, "interrogate")
    driver.get(base + "/program")
    fill(driver, "step_time_1", "00:00")
    fill(driver, "step_rate_1", "3mg/day")
    fill(driver, "step_time_2", "08:00")
    fill(driver, "step_rate_2", "5mg/day")
    shot(driver, "program")
    submit(driver, "review")
    t = body(driver)
    assert "Review: new therapy for pump" in t and "<< changed" in t
    assert driver.execute_script("return Chart.getChart('profile-chart') !== undefined")  # the vendored chart drew
    shot(driver, "program-review")
    assert pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]
    submit(driver, "confirm")
    assert "programmed: 24-hour maximum 5 mg/day" in body(driver)
    shot(driver, "program-done")
    assert pump.therapy()["rx"]["steps"] == [[0, 3_000_000], [28800, 5_000_000]]


def test_an_over_limit_dose_is_refused_with_the_limit_shown(driver, served):
    base, pump, guard, _ = served
    connect(driver, base, guard)
    driver.get(base + "/program")
    fill(driver, "step_rate_1", "30mg/day")
    submit(driver, "review")
    t = body(driver)
    assert "Refused by the pump: nothing was changed" in t
    assert "24-hour maximum for morphine: 20 mg/day" in t and "daily_max" in t
    shot(driver, "program-refused")
    assert pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]


def test_refill_with_a_discrepancy(driver, served):
    base, pump, guard, _ = served
    connect(driver, base, guard)
    driver.get(base + "/refill")
    fill(driver, "withdrawn", "12mL")
    by_id(driver, "label_checked").click()
    fill(driver, "added", "20mL")
    shot(driver, "refill")
    submit(driver, "review")
    t = body(driver)
    assert "Refill discrepancy" in t and "pocket fill" in t and "-8.000 mL WARNING" in t
    shot(driver, "refill-review")
    by_id(driver, "confirm").click()  # the acknowledgement box is required: the browser keeps the form
    assert "Refill discrepancy" in body(driver)
    by_id(driver, "acknowledge").click()
    submit(driver, "confirm")
    assert "refill recorded: 20.000 mL in the reservoir; discrepancy -8.000 mL (acknowledged)" in body(driver)
    shot(driver, "refill-done")


def test_acknowledge_an_alarm_log_and_diary(driver, served):
    base, pump, guard, _ = served
    pump.bench("motor", stall=True)
    pump.bench("advance", ms=10 * MIN_MS)
    pump.bench("motor", stall=False)
    connect(driver, base, guard)
    assert "motor-stall" in body(driver)
    driver.get(base + "/alarms")
    t = body(driver)
    assert "critical, therapy stopped" in t and "what to do" in t
    shot(driver, "alarms")
    submit(driver, "ack-motor-stall")
    assert "acknowledged motor-stall: yes" in body(driver)
    driver.get(base + "/log?event=alarm")
    assert "alarm raised" in body(driver)
    shot(driver, "log")


def test_patient_demand_bolus_refused_in_lockout(driver, served):
    base, pump, guard, _ = served
    pump.call(lc.PROGRAM, {"rx": {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 3_000_000]],
                                  "periodic": [], "demand": [200_000, 300, 1800, 4]}})
    connect(driver, base, guard, role="patient")
    assert "/patient" in driver.current_url
    submit(driver, "demand")
    assert "demand bolus started" in body(driver)
    pump.bench("advance", ms=10 * MIN_MS)
    submit(driver, "demand")
    t = body(driver)
    assert "demand_lockout" in t and "Not yet: allowed again in" in t
    assert not by_id(driver, "demand").is_enabled()  # the countdown holds the button
    shot(driver, "patient-lockout")
    by_id(driver, "note").send_keys("after the walk")
    driver.execute_script("document.querySelector('input[name=pain][value=\"4\"]').click()")
    submit(driver, "diary")
    assert "diary entry" in body(driver)
