"""Images as they come from a camera: decode any file, check it, fit it to the model's input.

**Decoding** (:func:`decode_image`, :func:`decode_mask`) accepts PNG, JPEG, BMP and TIFF of any
size, gray or RGB; EXIF orientation is applied; 16-bit (and 32-bit integer / float) images are
**scaled** to 8 bits over their type's range, never clipped. A file that cannot be used raises
:class:`BadFile` with a ``kind`` from :data:`QUARANTINE_KINDS` and a reason naming the file.

**Fitting** (:func:`fit`) maps an image (and its mask, nearest-neighbour) to the model's square
input with the ``line.resize`` policy:

- ``resize``: stretch to size x size (aspect not kept; cheap, the default);
- ``pad``: scale to fit, keeping the aspect ratio, and pad (letterbox) with 0 = healthy;
- ``tile``: cut native-resolution tiles of size x size (no scaling: small defects stay visible);
  the last row/column is shifted to end at the border, an image smaller than a tile is padded.

Each piece carries a :class:`Mapping` from its pixels back to the original image's pixels, so a
detected area's box maps back (:meth:`Mapping.to_original`) in exports and in the interface.

Example:
    >>> img = decode_image(data, "cam1/p001.tif", channels=1)        # doctest: +SKIP
    >>> [(p.suffix, p.mapping.to_original((0, 0, 8, 8))) for p in fit(img, None, 128, "tile")]
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ResizePolicy = Literal["resize", "tile", "pad"]

#: file suffix -> the PIL format its content must have
SUFFIX_FORMATS: dict[str, tuple[str, ...]] = {
    ".png": ("PNG",),
    ".jpg": ("JPEG", "MPO"),
    ".jpeg": ("JPEG", "MPO"),
    ".bmp": ("BMP", "DIB"),
    ".tif": ("TIFF",),
    ".tiff": ("TIFF",),
}
IMAGE_SUFFIXES: tuple[str, ...] = tuple(SUFFIX_FORMATS)

#: every reason a file is quarantined (kind -> what it means)
QUARANTINE_KINDS: dict[str, str] = {
    "zero_byte": "the file is empty",
    "not_an_image": "the content is not an image format we read",
    "wrong_extension": "the suffix does not match the content's format",
    "truncated": "the image data ends early",
    "corrupt": "the image cannot be decoded (bad data, CRC error...)",
    "unsupported_mode": "a pixel format we cannot map to gray or RGB",
    "too_small": "smaller than the model's stride",
    "mask_unreadable": "the mask cannot be decoded",
    "mask_not_index": "the mask is not a single-channel class-index image",
    "mask_unknown_class": "the mask has values above the number of classes",
    "mask_size_mismatch": "the mask's size differs from its image's",
    "mask_without_image": "a mask whose image does not exist",
    "image_without_mask": "no mask where the split requires one",
    "duplicate_id": "another file gives the same image id",
    "bad_sidecar": "the sidecar JSON cannot be read",
    "fetch_failed": "the object could not be read from the store after retries",
    "too_large": "more pixels than Pillow's decompression-bomb limit",
    "bad_link": "a symbolic link that is dangling, or leads out of the source or to a folder",
    "not_a_file": "not a regular file (a FIFO, a socket, a device)",
    "unsafe_key": "an S3 key with '..', '.', an empty segment or a leading '/'",
    "bad_name": "a name with control characters, or too long for a file name once flattened",
    "unexpected_error": "anything else that went wrong with this one object (type and message)",
}

#: kinds whose cause can go away: looked at again on every later run until they succeed (a
#: failed fetch and an unexpected error are fetched again; a missing mask or image is paired
#: again as soon as it arrives). While one is left, ``mentoring ingest`` exits 3.
RETRIED_KINDS: frozenset[str] = frozenset(
    {"fetch_failed", "unexpected_error", "image_without_mask", "mask_without_image"}
)
#: retried kinds whose objects are fetched again on every run (the others wait for a change)
REFETCHED_KINDS: frozenset[str] = frozenset({"fetch_failed", "unexpected_error"})


class BadFile(ValueError):
    """A file that cannot be used; ``kind`` is a key of :data:`QUARANTINE_KINDS`."""

    def __init__(self, kind: str, reason: str) -> None:
        assert kind in QUARANTINE_KINDS, kind
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _open(data: bytes, name: str, what: str) -> Image.Image:
    if not data:
        raise BadFile("zero_byte", f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        reason = f"{name}: not an image ({what} format not recognised)"
        raise BadFile("not_an_image", reason) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadFile("too_large", f"{name}: {what} too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadFile("corrupt", f"{name}: cannot read {what} header ({exc})") from None
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    allowed = SUFFIX_FORMATS.get(suffix)
    if allowed is None or im.format not in allowed:
        raise BadFile(
            "wrong_extension",
            f"{name}: content is {im.format}, the suffix says "
            f"{suffix or 'nothing'} (rename it with the right suffix)",
        )
    try:
        im.load()
    except OSError as exc:
        kind = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise BadFile(kind, f"{name}: {kind} {what} ({exc})") from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise BadFile("corrupt", f"{name}: corrupt {what} ({exc})") from None
    except MemoryError:
        raise BadFile("too_large", f"{name}: {what} does not fit in memory") from None
    return im


def _to_uint8(arr: np.ndarray, mode: str, name: str) -> np.ndarray:
    """Scale a deep image to 8 bits over its type's range (16-bit: /257)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if mode.startswith("I;16") or arr.dtype == np.uint16:
        full = 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        full = 1.0 if float(np.nanmax(arr)) <= 1.0 else 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        # PIL opens 16-bit PNGs as 32-bit "I": their range is 16 bits
        full = 65535.0 if int(arr.max(initial=0)) > 255 else 255.0
    else:
        raise BadFile("unsupported_mode", f"{name}: pixel type {arr.dtype} (mode {mode})")
    scaled = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, full) / full * 255.0
    return np.rint(scaled).astype(np.uint8)


def decode_image(data: bytes, name: str, channels: int) -> np.ndarray:
    """(H, W) uint8 for ``channels == 1``, (H, W, 3) for 3; EXIF-oriented, deep images scaled."""
    im = _open(data, name, "image")
    try:
        im = ImageOps.exif_transpose(im) or im
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a broken EXIF block: keep the stored orientation
    mode = im.mode
    if mode in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "PA", "RGBX", "La"):
        if channels == 1:
            return np.asarray(im.convert("L"))
        return np.asarray(im.convert("RGB"))
    if mode.startswith("I") or mode == "F":
        gray = _to_uint8(np.asarray(im), mode, name)
        if gray.ndim != 2:
            raise BadFile("unsupported_mode", f"{name}: {gray.ndim}-D deep image (mode {mode})")
        return gray if channels == 1 else np.repeat(gray[:, :, None], 3, axis=2)
    raise BadFile("unsupported_mode", f"{name}: pixel mode {mode} is not gray or RGB")


def decode_mask(data: bytes, name: str, n_classes: int) -> np.ndarray:
    """A class-index mask (H, W) uint8: 0 healthy, k = the k-th class."""
    try:
        im = _open(data, name, "mask")
    except BadFile as exc:
        raise BadFile("mask_unreadable", exc.reason) from None
    if im.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise BadFile(
            "mask_not_index", f"{name}: mask mode {im.mode}, expected one channel of class indices"
        )
    arr = np.asarray(im)
    if arr.ndim != 2:
        raise BadFile("mask_not_index", f"{name}: mask has shape {arr.shape}, expected (H, W)")
    top = int(arr.max(initial=0))
    if top > n_classes or int(arr.min(initial=0)) < 0:
        raise BadFile(
            "mask_unknown_class",
            f"{name}: mask values up to {top}, only 0..{n_classes} are classes "
            f"(0 = healthy, k = the k-th of line.classes)",
        )
    return arr.astype(np.uint8)


@dataclass(frozen=True)
class Mapping:
    """Stored pixel (x, y) -> original pixel (x * scale_x + offset_x, y * scale_y + offset_y)."""

    policy: str
    orig_width: int
    orig_height: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_original(self, bbox: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """A box (x0, y0, x1, y1) in stored pixels -> the same box in original pixels, clipped."""
        x0, y0, x1, y1 = bbox

        def cx(v: float) -> int:
            return int(min(max(round(v * self.scale_x + self.offset_x), 0), self.orig_width))

        def cy(v: float) -> int:
            return int(min(max(round(v * self.scale_y + self.offset_y), 0), self.orig_height))

        return cx(x0), cy(y0), cx(x1), cy(y1)

    def from_original(
        self, bbox: tuple[float, float, float, float], size: int
    ) -> tuple[int, int, int, int]:
        """A box in original pixels -> the same box in stored pixels, clipped to [0, size].

        The inverse of :meth:`to_original` (a box outside this piece, e.g. another tile's,
        comes back empty: x0 == x1 or y0 == y1).
        """
        x0, y0, x1, y1 = bbox

        def sx(v: float) -> int:
            return int(min(max(round((v - self.offset_x) / self.scale_x), 0), size))

        def sy(v: float) -> int:
            return int(min(max(round((v - self.offset_y) / self.scale_y), 0), size))

        return sx(x0), sy(y0), sx(x1), sy(y1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, width: int, height: int) -> Mapping:
        """The mapping of a manifest row; "" (synthetic or 1:1 data) is the identity."""
        if not text:
            return cls("identity", width, height)
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Piece:
    """One model-sized image cut from an original: ``suffix`` "" or ``-r<row>c<col>`` (tiles)."""

    suffix: str
    image: np.ndarray
    mask: np.ndarray | None
    mapping: Mapping


def _resize(arr: np.ndarray, w: int, h: int, nearest: bool) -> np.ndarray:
    if arr.shape[1] == w and arr.shape[0] == h:
        return arr
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    gap = None if nearest else 3.0
    return np.asarray(Image.fromarray(arr).resize((w, h), method, reducing_gap=gap))


def _pad_to(arr: np.ndarray, size: int, x: int, y: int) -> np.ndarray:
    out = np.zeros((size, size, *arr.shape[2:]), dtype=arr.dtype)
    out[y : y + arr.shape[0], x : x + arr.shape[1]] = arr
    return out


def _starts(length: int, size: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)  # last tile ends at the border (overlaps its neighbour)
    return starts


def fit(
    image: np.ndarray, mask: np.ndarray | None, size: int, policy: ResizePolicy | str
) -> list[Piece]:
    """Fit ``image`` (and ``mask``) to size x size with ``policy``: one piece, or tiles."""
    h, w = image.shape[:2]
    if policy == "resize":
        m = Mapping("resize", w, h, w / size, h / size)
        return [
            Piece(
                "",
                _resize(image, size, size, nearest=False),
                None if mask is None else _resize(mask, size, size, nearest=True),
                m,
            )
        ]
    if policy == "pad":
        s = size / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        px, py = (size - nw) // 2, (size - nh) // 2
        m = Mapping("pad", w, h, 1 / s, 1 / s, -px / s, -py / s)
        img = _pad_to(_resize(image, nw, nh, nearest=False), size, px, py)
        msk = None if mask is None else _pad_to(_resize(mask, nw, nh, nearest=True), size, px, py)
        return [Piece("", img, msk, m)]
    if policy == "tile":
        pieces = []
        for r, y0 in enumerate(_starts(h, size)):
            for c, x0 in enumerate(_starts(w, size)):
                img = image[y0 : y0 + size, x0 : x0 + size]
                msk = None if mask is None else mask[y0 : y0 + size, x0 : x0 + size]
                if img.shape[:2] != (size, size):
                    img = _pad_to(img, size, 0, 0)
                    msk = None if msk is None else _pad_to(msk, size, 0, 0)
                pieces.append(
                    Piece(f"-r{r:03d}c{c:03d}", img, msk, Mapping("tile", w, h, 1, 1, x0, y0))
                )
        return pieces
    raise ValueError(f"unknown resize policy {policy!r}: resize, tile or pad")


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array (fast compression: ingestion is I/O and decode bound)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
