"""`mmfs web --demo` in a real browser: Debian's headless Chromium, driven by Playwright.

The command runs as a person runs it, in a folder without any demo output (as on a fresh clone, so it
serves the Stylizer shipped with mmfs). The browser uploads a photo, clicks Stylize, and the result shown
must be an image that differs from the photo. The screenshot is saved (MMFS_WEB_SCREENSHOT=path keeps a
copy: the picture in docs/web.md was taken so).
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("playwright")
from PIL import Image  # noqa: E402

from support.web import CHROMIUM, WebCommand, chromium_context  # noqa: E402

if not CHROMIUM.exists():
    # CI installs it (.ci/run); elsewhere: apt-get install chromium
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: the browser test needs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def page_command(tmp_path):
    command = WebCommand(["--demo"], cwd=tmp_path)
    yield command
    command.stop()


def test_upload_a_photo_click_stylize_see_the_result(page_command, tmp_path):
    from playwright.sync_api import sync_playwright
    from skimage import data as skdata

    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    with sync_playwright() as playwright:
        browser = chromium_context(playwright, viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.goto(page_command.url, wait_until="domcontentloaded")
            page.wait_for_selector("#stylize", timeout=60_000)
            page.set_input_files("#photo input[type=file]", str(photo))
            page.wait_for_selector("#photo img", timeout=30_000)
            page.click("#stylize")
            shown = page.wait_for_selector("#result img", timeout=120_000)
            page.wait_for_function("document.querySelector('#stylize-info').innerText.includes('face(s)')")
            response = page.request.get(shown.get_attribute("src"))
            assert response.ok
            result = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
            info = page.inner_text("#stylize-info")
            page.screenshot(path=str(tmp_path / "web.png"))
        finally:
            browser.close()
    source = np.asarray(Image.open(photo).convert("RGB"))
    assert result.shape == source.shape  # the face pasted back into the whole photo
    changed = np.abs(result.astype(int) - source.astype(int)).max(axis=2) > 30
    assert 0.005 < changed.mean() < 0.3  # the face is stylized, the rest of the photo kept
    assert "1 face(s)" in info
    assert (tmp_path / "web.png").stat().st_size > 10_000
    log = page_command.output()
    assert "127.0.0.1" in log and "gradio.live" not in log and "public" not in log.lower()
    if os.environ.get("MMFS_WEB_SCREENSHOT"):
        shutil.copy(tmp_path / "web.png", os.environ["MMFS_WEB_SCREENSHOT"])
