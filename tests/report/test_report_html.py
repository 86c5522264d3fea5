"""The HTML page: self-contained, escaped, every image an embedded PNG; figures stay off pyplot."""

from __future__ import annotations

import base64
import io
import re

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image as PILImage

from finalmlp.report import plots
from finalmlp.report.curves import reliability
from finalmlp.report.html import Image, Section, Table, render_html

DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def embedded_pngs(page: str) -> list[bytes]:
    """The decoded PNG of every <img> of a page (fails on an image that is not a data URI)."""
    assert page.count("<img ") == len(DATA_URI.findall(page)), "an image is not an inline PNG"
    images = [base64.b64decode(data, validate=True) for data in DATA_URI.findall(page)]
    for png in images:
        with PILImage.open(io.BytesIO(png)) as decoded:
            assert decoded.format == "PNG" and decoded.width > 0 and decoded.height > 0
            decoded.verify()
    return images


def _figures() -> list[bytes]:
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=300)
    labels = (rng.uniform(size=300) < probs).astype(np.float32)
    epochs = np.arange(1.0, 4.0)
    made = [
        plots.history_figure(epochs, "epoch", epochs, epochs, epochs),
        plots.reliability_figure(reliability(labels, probs)),
        plots.score_histogram_figure(probs, labels),
        plots.gates_figure(["a", "b"], {"stream 1": np.ones(2), "stream 2": np.ones(2)}),
        plots.importance_figure(["a", "b"], np.array([0.1, 0.0])),
    ]
    return [plots.png_bytes(figure) for figure in made]


def test_page_embeds_every_image_as_a_png_and_nothing_external() -> None:
    figures_before = plt.get_fignums()
    pngs = _figures()
    assert plt.get_fignums() == figures_before  # no figure leaked into pyplot's global state
    table = Table(["k", "v"], [["x", "1"]])
    sections = [
        Section("One", ["a note"], [table], [Image(png, "figure") for png in pngs]),
        Section("Two", images=[Image(pngs[0], "again", "a caption")]),
    ]
    page = render_html("report", sections)
    assert embedded_pngs(page) == [*pngs, pngs[0]]
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert '<a href="#one">One</a>' in page and '<section id="two">' in page
    assert "<figcaption>a caption</figcaption>" in page


def test_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script> & co'
    section = Section(hostile, [hostile], [Table([hostile], [[hostile]])], [Image(b"png", hostile)])
    page = render_html(hostile, [section], subtitle=hostile)
    assert "<script>" not in page
    # <title>, <h1>, subtitle, contents, heading, note, table head and cell, alt text
    assert page.count("&lt;script&gt;") == 9
    assert "&amp; co" in page
