"""Headless Debian Chromium driven through chromedriver, and the OHIF page helpers the browser
test needs (wait for a SEG, show a series, go to a slice, count overlay-coloured pixels)."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

STATE_JS = (Path(__file__).parent / "viewer_state.js").read_text()
CHROMIUM = "/usr/bin/chromium"
SEGMENTATION_PANEL = "@ohif/extension-cornerstone.panelModule.panelSegmentation"
WINDOW = (1400, 900)


def start_chromium() -> Any:
    """A headless Chromium session; skips (with the reason) only when the browser cannot start."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # the test extra pins selenium
        pytest.fail(f"selenium is not installed ({exc}): pip install -e '.[test]'", pytrace=False)
    driver_path = shutil.which("chromedriver")
    if not Path(CHROMIUM).exists() or driver_path is None:
        pytest.skip(
            "Chromium cannot start: Debian chromium/chromium-driver are not installed "
            "(scripts/setup.sh installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        # No GPU here: WebGL on SwiftShader, which Cornerstone3D renders with.
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium cannot start: {exc.msg or exc}")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {value!r}")


def seg_state(driver: Any, series_uid: str) -> dict[str, Any] | None:
    """The viewer's segmentation for the SEG series, once loaded and coloured in the viewport."""
    state = driver.execute_script(STATE_JS, series_uid)
    if not state or not state.get("loaded"):
        return None
    if not state["segments"] or any(len(s["color"]) != 3 for s in state["segments"]):
        return None  # representation not attached to the viewport yet
    return state


def show_series(driver: Any, series_uid: str) -> None:
    """Put a series' display set in the active viewport, as dragging its thumbnail does."""
    driver.execute_script(
        """
        const s = window.services;
        const ds = s.displaySetService.getActiveDisplaySets()
          .find(d => d.SeriesInstanceUID === arguments[0]);
        const viewportId = s.viewportGridService.getActiveViewportId();
        const current = s.viewportGridService.getDisplaySetsUIDsForViewport(viewportId) || [];
        if (current.includes(ds.displaySetInstanceUID)) return;
        s.viewportGridService.setDisplaySetsForViewport({
          viewportId,
          displaySetInstanceUIDs: [ds.displaySetInstanceUID],
        });
        """,
        series_uid,
    )


def open_segmentation_panel(driver: Any) -> None:
    driver.execute_script(
        "window.services.panelService.activatePanel(arguments[0], true)", SEGMENTATION_PANEL
    )


def go_to_slice(driver: Any, sop_instance_uid: str) -> None:
    """Scroll the active viewport to the CT slice with ``sop_instance_uid`` and render."""
    found = driver.execute_script(
        """
        const cs = window.cornerstone;
        const viewport = cs.getEnabledElements()[0].viewport;
        const ids = viewport.getImageIds();
        const index = ids.findIndex(
          id => cs.metaData.get('generalImageModule', id)?.sopInstanceUID === arguments[0]);
        if (index < 0) return false;
        viewport.setImageIdIndex(index);
        viewport.render();
        return true;
        """,
        sop_instance_uid,
    )
    assert found, f"the viewport has no slice {sop_instance_uid}"
    time.sleep(1.0)  # the overlay renders on the next animation frames


def viewport_pixels(driver: Any) -> np.ndarray:
    """RGB pixels of the active viewport's canvas as shown on screen (overlays included)."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.CSS_SELECTOR, "canvas.cornerstone-canvas")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"))


def tinted_pixels(pixels: np.ndarray, rgb: tuple[int, int, int], margin: int = 8) -> int:
    """Pixels tinted towards ``rgb``: the CT is grey (R = G = B), so a pixel whose channels
    differ in the same direction as the segment colour's comes from the overlay."""
    channels = pixels.astype(int)
    target = np.array(rgb) - np.mean(rgb)
    deviation = channels - channels.mean(axis=-1, keepdims=True)
    dominant = int(np.argmax(np.abs(target)))
    sign = np.sign(target[dominant])
    return int((sign * deviation[..., dominant] > margin).sum())
