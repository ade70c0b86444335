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


def shown_result(page, previous: str | None = None) -> np.ndarray:
    """The image in the result box once it is there (and is not `previous`), as the browser fetched it."""
    page.wait_for_function(
        "prev => { const img = document.querySelector('#result img'); return img && img.src && img.src !== prev; }",
        arg=previous, timeout=120_000,
    )  # fmt: skip
    response = page.request.get(page.get_attribute("#result img", "src"))
    assert response.ok
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def test_upload_a_photo_click_stylize_see_the_result(page_command, tmp_path):
    from playwright.sync_api import sync_playwright
    from skimage import data as skdata

    from mmfs.demo.synthetic import FaceParams, render_face

    photo, face = tmp_path / "astronaut.png", tmp_path / "face.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    # The first of the demo's held-out faces (its seed, 1000): what docs/web.md shows, with seeds 3-10.
    Image.fromarray(render_face(FaceParams.sample(np.random.default_rng(1000)), 64)[0]).save(face)
    with sync_playwright() as playwright:
        browser = chromium_context(playwright, viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.goto(page_command.url, wait_until="domcontentloaded")
            page.wait_for_selector("#stylize", timeout=60_000)
            # A real photo: detected, aligned, stylized, pasted back.
            page.set_input_files("#photo input[type=file]", str(photo))
            page.wait_for_selector("#photo img", timeout=30_000)
            page.click("#stylize")
            pasted = shown_result(page)
            info = page.inner_text("#stylize-info")
            first_src = page.get_attribute("#result img", "src")
            # A synthetic face crop, as the demo's: aligned, the grid of seeds 3 to 10.
            page.set_input_files("#photo input[type=file]", str(face))
            page.check("#aligned input")
            page.fill("#stylize-seed input[type=number]", "3")
            page.keyboard.press("Enter")
            page.click("#grid")
            styled = shown_result(page, first_src)
            page.wait_for_function("document.querySelector('#stylize-info').innerText.includes('8 output(s)')")
            page.wait_for_function("document.querySelectorAll('#gallery img').length == 8")
            page.wait_for_timeout(500)  # the image boxes finish their layout
            page.screenshot(path=str(tmp_path / "web.png"))
        finally:
            browser.close()
    source = np.asarray(Image.open(photo).convert("RGB"))
    assert pasted.shape == source.shape  # the face pasted back into the whole photo
    changed = np.abs(pasted.astype(int) - source.astype(int)).max(axis=2) > 30
    assert 0.005 < changed.mean() < 0.3  # the face is stylized, the rest of the photo kept
    assert "1 face(s)" in info
    crop = np.asarray(Image.open(face).convert("RGB"))
    assert styled.shape == crop.shape and np.abs(styled.astype(int) - crop.astype(int)).mean() > 20
    assert (tmp_path / "web.png").stat().st_size > 10_000
    log = page_command.output()
    assert "127.0.0.1" in log and "gradio.live" not in log and "public" not in log.lower()
    if os.environ.get("MMFS_WEB_SCREENSHOT"):
        shutil.copy(tmp_path / "web.png", os.environ["MMFS_WEB_SCREENSHOT"])
