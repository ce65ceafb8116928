"""Decoding images as cameras write them, and fitting them to the model's input
(src/mentoring/data/images.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mentoring.data.images import (
    QUARANTINE_KINDS,
    BadFile,
    Mapping,
    decode_image,
    decode_mask,
    fit,
)


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_16_bit_png_and_tiff_are_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 256 * 4, dtype=np.uint16).reshape(4, 256)
    for fmt, name in (("PNG", "a.png"), ("TIFF", "a.tif")):
        got = decode_image(_save(Image.fromarray(ramp), fmt), name, channels=1)
        assert got.dtype == np.uint8
        want = np.rint(ramp / 65535 * 255).astype(np.uint8)
        assert np.array_equal(got, want), fmt  # clipping would saturate above 255/65535
        assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) > 200


def test_32_bit_float_tiff_in_unit_range() -> None:
    img = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    got = decode_image(_save(Image.fromarray(img, mode="F"), "TIFF"), "f.tiff", 1)
    assert got[0, 0] == 0 and got[-1, -1] == 255


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((20, 40), np.uint8)
    arr[:, :10] = 255  # bright left band in the stored pixels
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    got = decode_image(_save(im, "JPEG", exif=exif.tobytes(), quality=95), "r.jpg", 1)
    assert got.shape == (40, 20)  # displayed upright: portrait
    assert got[:10].mean() > 200 and got[-10:].mean() < 50  # the band is now at the top


def test_gray_and_rgb_conversions() -> None:
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[..., 0] = 255
    data = _save(Image.fromarray(rgb), "PNG")
    assert decode_image(data, "c.png", 3).shape == (6, 6, 3)
    gray = decode_image(data, "c.png", 1)
    assert gray.shape == (6, 6) and 70 < gray[0, 0] < 80  # ITU-R 601 luma of pure red
    g = _save(Image.fromarray(np.full((5, 5), 9, np.uint8)), "BMP")
    assert decode_image(g, "g.bmp", 3).shape == (5, 5, 3)


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("e.png", b"", "zero_byte"),
        ("t.png", b"text", "not_an_image"),
        ("j.png", _save(Image.new("L", (8, 8)), "JPEG"), "wrong_extension"),
        ("p.tif", _save(Image.new("L", (8, 8)), "PNG"), "wrong_extension"),
        ("n", _save(Image.new("L", (8, 8)), "PNG"), "wrong_extension"),
    ],
)
def test_bad_image_kinds(name: str, data: bytes, kind: str) -> None:
    with pytest.raises(BadFile) as err:
        decode_image(data, name, 1)
    assert err.value.kind == kind and name in err.value.reason
    assert kind in QUARANTINE_KINDS


def test_truncated_and_corrupt() -> None:
    rng = np.random.default_rng(0)
    good = _save(Image.fromarray(rng.integers(0, 255, (64, 64), np.uint8)), "PNG")
    with pytest.raises(BadFile) as err:
        decode_image(good[: len(good) // 2], "cut.png", 1)
    assert err.value.kind == "truncated"
    flipped = good[:200] + bytes(b ^ 0xFF for b in good[200:260]) + good[260:]
    with pytest.raises(BadFile) as err:
        decode_image(flipped, "bad.png", 1)
    assert err.value.kind == "corrupt"


def test_mask_checks() -> None:
    ok = decode_mask(_save(Image.fromarray(np.array([[0, 2]], np.uint8)), "PNG"), "m.png", 2)
    assert ok.tolist() == [[0, 2]]
    with pytest.raises(BadFile) as err:
        decode_mask(_save(Image.fromarray(np.array([[0, 3]], np.uint8)), "PNG"), "m.png", 2)
    assert err.value.kind == "mask_unknown_class" and "0..2" in err.value.reason
    with pytest.raises(BadFile) as err:
        decode_mask(_save(Image.new("RGB", (4, 4)), "PNG"), "m.png", 2)
    assert err.value.kind == "mask_not_index"
    with pytest.raises(BadFile) as err:
        decode_mask(b"zz", "m.png", 2)
    assert err.value.kind == "mask_unreadable"


def _pattern(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    img = (np.add.outer(np.arange(h), np.arange(w)) % 251).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : h // 2, w // 4 : w // 2] = 3
    return img, mask


def test_resize_stretches_and_maps_back() -> None:
    img, mask = _pattern(300, 500)
    (piece,) = fit(img, mask, 128, "resize")
    assert piece.image.shape == (128, 128) and piece.mask is not None
    assert set(np.unique(piece.mask)) == {0, 3}  # nearest-neighbour: no invented class values
    assert piece.mapping.to_original((0, 0, 128, 128)) == (0, 0, 500, 300)
    assert piece.mapping.to_original((32, 32, 64, 64)) == (125, 75, 250, 150)


def test_pad_keeps_aspect_and_maps_back() -> None:
    img, mask = _pattern(300, 600)
    (piece,) = fit(img, mask, 128, "pad")
    assert piece.image.shape == (128, 128)
    assert (piece.image[:32] == 0).all() and (piece.image[-32:] == 0).all()  # letterbox bands
    m = piece.mapping
    assert m.scale_x == m.scale_y  # aspect kept
    assert m.to_original((0, 32, 128, 96)) == (0, 0, 600, 300)
    # the mask's box lands where the original's is
    ys, xs = np.nonzero(piece.mask)
    box = m.to_original((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    assert np.allclose(box, (150, 75, 300, 150), atol=5)


def test_tiles_cover_the_image_at_native_resolution() -> None:
    img, mask = _pattern(300, 500)
    pieces = fit(img, mask, 128, "tile")
    assert len(pieces) == 3 * 4  # ceil(300/128) x ceil(500/128)
    assert len({p.suffix for p in pieces}) == len(pieces)
    covered = np.zeros((300, 500), bool)
    for p in pieces:
        x0, y0, x1, y1 = p.mapping.to_original((0, 0, 128, 128))
        assert np.array_equal(img[y0:y1, x0:x1], p.image)  # native pixels, no scaling
        assert p.mask is not None and np.array_equal(mask[y0:y1, x0:x1], p.mask)
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    last = pieces[-1].mapping
    assert (last.offset_x, last.offset_y) == (500 - 128, 300 - 128)  # shifted to end at the border


def test_a_small_image_is_padded_into_one_tile() -> None:
    img, _ = _pattern(50, 70)
    (piece,) = fit(img, None, 128, "tile")
    assert piece.image.shape == (128, 128) and np.array_equal(piece.image[:50, :70], img)
    assert piece.mapping.to_original((0, 0, 128, 128)) == (0, 0, 70, 50)


def test_mapping_round_trip_and_json() -> None:
    m = Mapping("pad", 600, 300, 600 / 128, 600 / 128, 0.0, -150.0)
    box = m.to_original((10, 40, 50, 80))
    assert m.from_original(box, 128) == (10, 40, 50, 80)
    assert Mapping.from_json(m.to_json(), 128, 128) == m
    assert Mapping.from_json("", 128, 128).to_original((1, 2, 3, 4)) == (1, 2, 3, 4)
    tile = Mapping("tile", 500, 300, 1, 1, 256, 128)
    assert tile.from_original((0, 0, 100, 100), 128) == (0, 0, 0, 0)  # another tile's box: empty
