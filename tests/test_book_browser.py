"""Open the built books (the smoke run's and the reference run's) in headless Chromium: every page
loads, every image loads, and no page shows a Python traceback, an error output, a warning or an
absolute path of the machine that ran it."""

import re
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
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield drv
    drv.quit()


MACHINE_PATH = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|[A-Z]:\\\\Users)")
WARNING = re.compile(r"\b\w*Warning: |^WARNING\b|^W\d{4} ", re.M)


@pytest.fixture(scope="module")
def reference_book(tmp_path_factory):
    """The reference book, built as the Pages workflow builds it (into the repository's runs/reference-book, which
    tests/test_maintenance.py builds too: the lock keeps the other pytest-xdist worker out while this module reads)."""
    from nucseg_lib.pipeline.runner import REFERENCE, book
    from tests.conftest import one_worker_at_a_time

    with one_worker_at_a_time(tmp_path_factory, "reference-book"):
        yield book(REFERENCE / "coelho2009-cpu").parent.parent  # runs/reference-book


def check_pages(html: Path, browser, min_pages: int, min_images: int, check_paths: bool = True):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    pages = sorted(
        p
        for p in html.rglob("*.html")
        if not p.name.startswith(("genindex", "search", "_")) and "_static" not in p.parts
    )
    assert len(pages) >= min_pages, pages
    n_images = 0
    for page in pages:
        browser.get(page.as_uri())
        # get() usually returns after the load event, but not always (seen with a 06_stardist page): wait
        # for it, up to 60 s, rather than read a half-loaded page
        try:
            WebDriverWait(browser, 60).until(lambda b: b.execute_script("return document.readyState") == "complete")
        except TimeoutException:
            pytest.fail(f"{page}: still {browser.execute_script('return document.readyState')!r} after 60 s")
        text = browser.find_element("tag name", "body").text
        assert "Traceback (most recent call last)" not in text, page
        assert not browser.find_elements("css selector", ".output.traceback, .cell_output .error, div.output_error"), (
            page
        )
        assert not WARNING.search(text), (page, WARNING.search(text).group(0))
        if check_paths:
            assert not MACHINE_PATH.search(text), (page, text[max(0, MACHINE_PATH.search(text).start() - 80) :][:200])
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert broken == [], (page, broken)
        n_images += browser.execute_script("return document.images.length")
    assert n_images >= min_images  # the notebooks' figures are on the pages


def test_reference_book_pages_load_clean(reference_book, browser):
    check_pages(reference_book / "_build" / "html", browser, min_pages=13, min_images=15)


def test_every_page_and_image_loads(smoke_run, browser):
    # the smoke run lives in a temporary folder, so its pages name /tmp paths: only the reference is held
    # to "no machine paths"
    check_pages(Path(smoke_run) / "_build" / "html", browser, min_pages=12, min_images=10, check_paths=False)
