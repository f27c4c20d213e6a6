"""The web demo in headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium
with the system driver: no browser or driver download): upload a clip, run a task, read the
streamed answer, take a screenshot.

``SPEECHLLM_DEMO_PNG=docs/demo.png pytest -m slow tests/test_serve_browser.py`` refreshes the
README's screenshot from the bundled Whisper on the JFK clip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from speechllm.serve import BackgroundServer, ServeConfig, create_app
from tests.test_serve import CLIP, NAME, _config, expected
from tests.test_serve import tiny_model  # noqa: F401  (a fixture, shared)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="needs Debian chromium and chromium-driver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=900,1000",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a beeping microphone


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(condition))


def run_task(driver, url: str, audio: Path, task: str = "transcribe", instruction: str = "") -> tuple[str, str]:
    """Open the page, upload ``audio``, run ``task``; returns (answer state, answer text)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, "return document.getElementById('model').textContent !== 'connecting…'")
    driver.find_element(By.ID, "file").send_keys(str(audio))
    driver.find_element(By.CSS_SELECTOR, f"input[name=task][value={task}]").click()
    if instruction:
        driver.find_element(By.ID, "instruction").send_keys(instruction)
    _wait(driver, "return !document.getElementById('run').disabled")
    driver.find_element(By.ID, "run").click()
    _wait(driver, "return ['done', 'error'].includes(document.getElementById('answer').dataset.state)", 120)
    answer = driver.find_element(By.ID, "answer")
    return answer.get_attribute("data-state"), answer.text


def test_demo_page_transcribes_asks_and_reports_errors(browser, tiny_model, tmp_path):  # noqa: F811
    clip, junk = tmp_path / "clip.wav", tmp_path / "notes.wav"
    clip.write_bytes(CLIP)
    junk.write_bytes(b"this is not audio" * 50)
    with BackgroundServer(create_app(_config(tts=False), tiny_model)) as url:
        state, text = run_task(browser, url, clip)
        assert (state, text) == ("done", expected(tiny_model, CLIP).strip())
        assert browser.execute_script("return document.getElementById('model').textContent") == NAME
        state, text = run_task(browser, url, clip, "ask", "What is this sound?")
        assert (state, text) == ("done", expected(tiny_model, CLIP, "What is this sound?").strip())
        state, text = run_task(browser, url, junk)
        assert state == "error" and "not a recognised audio format" in text
        assert browser.get_screenshot_as_file(str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_demo_page_records_from_the_microphone(browser, tiny_model):  # noqa: F811
    """MediaRecorder on Chromium's fake microphone; the page converts the webm/opus to wav itself."""
    import time

    from selenium.webdriver.common.by import By

    with BackgroundServer(create_app(_config(tts=False), tiny_model)) as url:
        browser.get(url)
        _wait(browser, "return document.getElementById('model').textContent !== 'connecting…'")
        browser.find_element(By.ID, "record").click()
        _wait(browser, "return document.getElementById('record').classList.contains('recording')")
        time.sleep(1.5)
        browser.find_element(By.ID, "record").click()
        _wait(browser, "return document.getElementById('audio-info').textContent.startsWith('recording.wav')")
        browser.find_element(By.ID, "run").click()
        _wait(browser, "return ['done', 'error'].includes(document.getElementById('answer').dataset.state)", 60)
        assert browser.find_element(By.ID, "answer").get_attribute("data-state") == "done"


@pytest.mark.slow
def test_demo_screenshot_with_whisper(browser, shared_data, tmp_path):
    with BackgroundServer(create_app(ServeConfig(model="whisper-tiny.en"))) as url:
        state, text = run_task(browser, url, shared_data / "whisper_jfk" / "jfk.flac")
        assert state == "done" and "what your country can do for you" in text.lower()
        if browser.execute_script("return !document.getElementById('speak-row').hidden"):  # a TTS voice exists
            _wait(browser, "const a = document.getElementById('reply'); return !a.hidden && a.duration > 0.5", 60)
        shot = tmp_path / "demo.png"
        browser.get_screenshot_as_file(str(shot))
    if os.environ.get("SPEECHLLM_DEMO_PNG"):
        shutil.copy(shot, os.environ["SPEECHLLM_DEMO_PNG"])
