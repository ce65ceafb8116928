"""The per-access reader of manifest images and masks (src/mentoring/data/reader.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mentoring.data.reader import ManifestImagesMasks


def test_images_and_masks_come_back_writable_and_equal_to_the_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 12), dtype=np.uint8)
    mask = rng.integers(0, 3, (8, 12), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(mask).save(tmp_path / "a-mask.png")
    df = pd.DataFrame(
        {
            "path": ["a.png"],
            "mask_path": ["a-mask.png"],
            "height": [8],
            "width": [12],
            "channels": [1],
            "image_id": ["a"],
        }
    )
    with warnings.catch_warnings():
        # torch warns once per process on a read-only array (Pillow hands those out)
        warnings.simplefilter("error", UserWarning)
        got_image, got_mask = ManifestImagesMasks(df, tmp_path)[0]
    assert np.array_equal(got_image.numpy()[0], image)
    assert np.array_equal(got_mask.numpy(), mask)
    got_mask[0, 0] = 7  # writable: a copy, not the decoder's buffer
