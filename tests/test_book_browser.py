"""Open the built book (smoke run) in headless Chromium: every page loads, every image loads,
and no page shows a Python traceback or an error output."""
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield drv
    drv.quit()


def test_every_page_and_image_loads(smoke_run, browser):
    html = Path(smoke_run) / "_build" / "html"
    pages = sorted(p for p in html.rglob("*.html") if not p.name.startswith(("genindex", "search", "_")) and "_static" not in p.parts)
    assert len(pages) >= 12, pages
    n_images = 0
    for page in pages:
        browser.get(page.as_uri())
        state = browser.execute_script("return document.readyState")
        assert state == "complete", page
        text = browser.find_element("tag name", "body").text
        assert "Traceback (most recent call last)" not in text, page
        assert not browser.find_elements("css selector", ".output.traceback, .cell_output .error, div.output_error"), page
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        assert broken == [], (page, broken)
        n_images += browser.execute_script("return document.images.length")
    assert n_images >= 10  # the notebooks' figures are on the pages
