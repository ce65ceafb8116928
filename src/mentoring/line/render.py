"""Rendering of one synthetic part image: part, defects, nuisances, acquisition setup.

Everything is drawn in float32 gray levels in [0, 1] on a ``size x size`` grid, with numpy and
scipy only, from one :class:`numpy.random.Generator`, so an image is a pure function of its seed.

Why it looks like this: the baseline must see a realistic covariate shift on the ``new`` setup.
The nuisances of the new setup (dust, reflections, oil marks, machining marks) are healthy but
share local features with defects (a reflection is a bright streak like a scratch, an oil mark a
dark blob like a stain, machining marks thin dark lines like cracks), and its lighting, blur and
noise lower the contrast of real defects. Those are the false positives and misses of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mentoring.config import AcquisitionSetup

Array = np.ndarray


@dataclass(frozen=True)
class Rendered:
    """One rendered image.

    Attributes:
        image: (H, W) float32 gray levels in [0, 1], or (H, W, 3) for RGB.
        mask: (H, W) uint8 class index per pixel, 0 = healthy, k = ``classes[k - 1]``.
        part_ref: the part reference drawn.
        defects: class name of each defect drawn, in drawing order.
        nuisances: name of each healthy nuisance drawn.
    """

    image: Array
    mask: Array
    part_ref: str
    defects: tuple[str, ...]
    nuisances: tuple[str, ...]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _segment_dist(yy: Array, xx: Array, p0: Array, p1: Array) -> Array:
    """(H, W) euclidean distance of every pixel to the segment p0-p1 (points as (y, x))."""
    d = p1 - p0
    denom = float(d @ d) or 1e-9
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / denom, 0.0, 1.0)
    return np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))


def _polyline_dist(yy: Array, xx: Array, pts: Array) -> Array:
    return np.min([_segment_dist(yy, xx, pts[i], pts[i + 1]) for i in range(len(pts) - 1)], axis=0)


class Canvas:
    """Pixel coordinate grids shared by every drawing of one image size."""

    def __init__(self, size: int) -> None:
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.yy, self.xx = yy, xx

    # -- parts ---------------------------------------------------------------------------------
    def part(self, ref: str, rng: np.random.Generator) -> tuple[Array, Array]:
        """Return the part's (H, W) bool mask and (H, W) float texture (defined everywhere)."""
        s, yy, xx = self.size, self.yy, self.xx
        cy, cx = s / 2 + rng.uniform(-0.04, 0.04, 2) * s
        fine = rng.normal(0, 1, (s, s)).astype(np.float32)
        if ref == "disc":  # turned metal: concentric turning marks, darker rim
            r = s * rng.uniform(0.36, 0.43)
            rr = np.hypot(yy - cy, xx - cx)
            mask = rr < r
            period = rng.uniform(2.5, 4.0)
            tex = rng.uniform(0.55, 0.65) + 0.02 * np.sin(2 * np.pi * rr / period)
            tex = tex - 0.07 * (rr / r) ** 2 + 0.008 * fine
        elif ref == "plate":  # brushed metal: streaks along the plate's axis
            a = rng.uniform(-0.3, 0.3)
            u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
            v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
            hu, hv, rc = s * rng.uniform(0.36, 0.42), s * rng.uniform(0.26, 0.33), s * 0.06
            qu, qv = np.maximum(np.abs(u) - hu + rc, 0), np.maximum(np.abs(v) - hv + rc, 0)
            mask = np.hypot(qu, qv) < rc
            grid = np.linspace(-s, s, 4 * s)
            streaks = ndimage.gaussian_filter1d(rng.normal(0, 1, grid.size), 0.8)
            tex = rng.uniform(0.6, 0.7) + 0.025 * np.interp(v, grid, streaks) + 0.006 * fine
        elif ref == "bracket":  # cast part: hexagon with a granular, blotchy surface
            theta0 = rng.uniform(0, np.pi / 3)
            ks = theta0 + np.arange(6) * np.pi / 3
            proj = np.max([(xx - cx) * np.cos(k) + (yy - cy) * np.sin(k) for k in ks], axis=0)
            mask = proj < s * rng.uniform(0.34, 0.4)
            grain = ndimage.gaussian_filter(fine, 1.2)
            blotch = ndimage.gaussian_filter(rng.normal(0, 1, (s, s)).astype(np.float32), 5)
            tex = rng.uniform(0.45, 0.55) + 0.05 * grain + 0.12 * blotch
        else:
            raise ValueError(f"unknown part reference {ref!r}")
        return mask, tex.astype(np.float32)

    # -- placement -------------------------------------------------------------------------------
    def _point(self, rng: np.random.Generator, inside: Array, lo: float, hi: float) -> Array:
        """A random (y, x) whose inside-distance to the part edge is in [lo, hi]."""
        ys, xs = np.nonzero((inside >= lo) & (inside <= hi))
        if ys.size == 0:
            ys, xs = np.nonzero(inside > 0)
        i = rng.integers(ys.size)
        return np.array([ys[i], xs[i]], dtype=np.float32) + rng.uniform(-0.5, 0.5, 2)

    def _walk(
        self,
        rng: np.random.Generator,
        start: Array,
        steps: int,
        step: tuple[float, float],
        turn: float,
    ) -> Array:
        pts, ang = [start], rng.uniform(0, 2 * np.pi)
        for _ in range(steps):
            ang += rng.normal(0, turn)
            pts.append(pts[-1] + _uniform(rng, step) * np.array([np.sin(ang), np.cos(ang)]))
        return np.array(pts, dtype=np.float32)

    # -- defects ---------------------------------------------------------------------------------
    def defect(
        self, cls: str, rng: np.random.Generator, img: Array, inside: Array, contrast: float
    ) -> tuple[Array, Array]:
        """Draw one defect. Return its (H, W) bool mask and the (H, W) delta to add to ``img``.

        ``inside`` is the (H, W) distance of each part pixel to the part edge (0 outside).
        """
        yy, xx = self.yy, self.xx
        if cls == "scratch":  # thin straight line, bright or dark
            c = self._point(rng, inside, 8, 1e9)
            ang, half = rng.uniform(0, np.pi), rng.uniform(8, 22)
            dv = half * np.array([np.sin(ang), np.cos(ang)], dtype=np.float32)
            d = _segment_dist(yy, xx, c - dv, c + dv)
            w = rng.uniform(0.8, 1.5)
            sign = 1.0 if rng.random() < 0.7 else -1.0
            delta = sign * rng.uniform(0.22, 0.34) * contrast * np.exp(-((d / w) ** 2))
            return d < w + 0.4, delta
        if cls == "crack":  # jagged dark random walk
            c = self._point(rng, inside, 8, 1e9)
            pts = self._walk(rng, c, int(rng.integers(4, 9)), (3.0, 6.0), 0.6)
            d = _polyline_dist(yy, xx, pts)
            w = rng.uniform(0.7, 1.1)
            delta = -rng.uniform(0.3, 0.42) * contrast * np.exp(-((d / w) ** 2))
            return d < w + 0.4, delta
        if cls == "dent":  # shallow bowl lit from one side: bright half, dark half
            c = self._point(rng, inside, 10, 1e9)
            a = rng.uniform(4.5, 8.5)
            b = a * rng.uniform(0.6, 1.0)
            ang = rng.uniform(0, np.pi)
            u = (xx - c[1]) * np.cos(ang) + (yy - c[0]) * np.sin(ang)
            v = -(xx - c[1]) * np.sin(ang) + (yy - c[0]) * np.cos(ang)
            q = (u / a) ** 2 + (v / b) ** 2
            inside_q = np.clip(1 - q, 0, 1)
            delta = rng.uniform(0.28, 0.4) * contrast * (u / a) * np.sqrt(inside_q) * 1.6
            return q < 1, delta
        if cls == "stain":  # irregular dark blob with soft edges
            c = self._point(rng, inside, 10, 1e9)
            field = np.zeros_like(yy)
            for _ in range(int(rng.integers(3, 6))):
                o = c + rng.normal(0, 3.0, 2)
                r = rng.uniform(2.5, 5.0)
                field += np.exp(-((yy - o[0]) ** 2 + (xx - o[1]) ** 2) / (2 * r * r))
            mask = field > 0.45
            soft = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)
            return mask, -rng.uniform(0.16, 0.26) * contrast * soft
        if cls == "hole":  # small round through-hole: near black, thin bright rim
            c = self._point(rng, inside, 8, 1e9)
            r = rng.uniform(2.6, 4.0)
            d = np.hypot(yy - c[0], xx - c[1])
            alpha = np.clip(r + 0.5 - d, 0, 1) * min(1.0, 0.35 + 0.65 * contrast)
            rim = 0.12 * contrast * np.exp(-(((d - r - 1.0) / 0.7) ** 2))
            return d < r + 0.5, -(img - 0.04) * alpha + rim
        raise ValueError(f"unknown defect class {cls!r}")

    def chip(self, rng: np.random.Generator, part: Array, inside: Array) -> Array:
        """A chip: a bite out of the part's edge. Return the (H, W) bool region removed."""
        c = self._point(rng, inside, 0.5, 2.0)
        bite = np.zeros_like(part)
        for _ in range(int(rng.integers(2, 4))):
            o = c + rng.normal(0, 2.0, 2)
            r = rng.uniform(3.0, 6.0)
            bite |= np.hypot(self.yy - o[0], self.xx - o[1]) < r
        return bite & part

    # -- nuisances (healthy) ---------------------------------------------------------------------
    def nuisance(self, name: str, rng: np.random.Generator, inside: Array) -> Array:
        """Draw one healthy, defect-like nuisance; return the (H, W) delta to add."""
        yy, xx = self.yy, self.xx
        if name == "dust":  # a cluster of tiny bright specks
            c = self._point(rng, inside, 4, 1e9)
            out = np.zeros_like(yy)
            for _ in range(int(rng.integers(3, 9))):
                o = c + rng.normal(0, 3.5, 2)
                r = rng.uniform(0.5, 1.0)
                out += rng.uniform(0.25, 0.45) * np.exp(
                    -((yy - o[0]) ** 2 + (xx - o[1]) ** 2) / (2 * r * r)
                )
            return out
        if name == "reflection":  # soft, wide specular streak: looks like a bright scratch
            c = self._point(rng, inside, 6, 1e9)
            ang, half = rng.uniform(0, np.pi), rng.uniform(8, 20)
            dv = half * np.array([np.sin(ang), np.cos(ang)], dtype=np.float32)
            d = _segment_dist(yy, xx, c - dv, c + dv)
            return rng.uniform(0.12, 0.26) * np.exp(-((d / rng.uniform(2.2, 3.6)) ** 2))
        if name == "oil":  # dark ring-shaped mark with a lighter centre: looks like a stain
            c = self._point(rng, inside, 8, 1e9)
            r = rng.uniform(4.0, 8.0)
            d = np.hypot(yy - c[0], xx - c[1]) * (
                1 + 0.15 * np.sin(3 * np.arctan2(yy - c[0], xx - c[1]))
            )
            ring = np.exp(-(((d - r) / (0.35 * r)) ** 2)) + 0.4 * np.exp(-((d / r) ** 2))
            return -rng.uniform(0.08, 0.16) * ring
        if name == "machining":  # parallel thin tool marks: look like cracks or scratches
            c = self._point(rng, inside, 10, 1e9)
            ang, half = rng.uniform(0, np.pi), rng.uniform(10, 24)
            dv = half * np.array([np.sin(ang), np.cos(ang)], dtype=np.float32)
            nv = np.array([np.cos(ang), -np.sin(ang)], dtype=np.float32)
            out = np.zeros_like(yy)
            spacing = rng.uniform(2.5, 4.0)
            amp = rng.uniform(0.07, 0.13)
            for k in range(int(rng.integers(3, 7))):
                o = c + (k - 2) * spacing * nv
                d = _segment_dist(yy, xx, o - dv, o + dv)
                out -= amp * np.exp(-((d / 0.6) ** 2))
            return out
        raise ValueError(f"unknown nuisance {name!r}")

    # -- acquisition ------------------------------------------------------------------------------
    def background(self, setup: AcquisitionSetup, rng: np.random.Generator) -> Array:
        bg = np.full((self.size, self.size), _uniform(rng, setup.background), np.float32)
        if setup.background_texture > 0:  # conveyor belt: stripes plus weave
            period = rng.uniform(5, 9)
            bg += setup.background_texture * np.sin(2 * np.pi * self.yy / period)
            bg += 0.5 * setup.background_texture * rng.normal(0, 1, bg.shape).astype(np.float32)
        return bg

    def acquire(self, img: Array, setup: AcquisitionSetup, rng: np.random.Generator) -> Array:
        """Apply the setup's lighting, optics and sensor to a rendered scene."""
        s = self.size
        img = img * _uniform(rng, setup.gain)
        g = _uniform(rng, setup.gradient)
        if g > 0:  # linear lighting ramp in a random direction
            a = rng.uniform(0, 2 * np.pi)
            ramp = ((self.xx - s / 2) * np.cos(a) + (self.yy - s / 2) * np.sin(a)) / (s / 2)
            img = img * (1 + g * ramp)
        if rng.random() < setup.hot_spot_prob:  # broad specular hot spot
            c = rng.uniform(0.2, 0.8, 2) * s
            r = rng.uniform(0.1, 0.2) * s
            img = img + rng.uniform(0.15, 0.3) * np.exp(
                -((self.yy - c[0]) ** 2 + (self.xx - c[1]) ** 2) / (2 * r * r)
            )
        sigma = _uniform(rng, setup.blur)
        if sigma > 0:
            img = ndimage.gaussian_filter(img, sigma)
        img = np.clip(img, 0, 1) ** _uniform(rng, setup.gamma)
        img = img + rng.normal(0, _uniform(rng, setup.noise), img.shape)
        return np.clip(img, 0, 1).astype(np.float32)


def render(
    canvas: Canvas,
    rng: np.random.Generator,
    setup: AcquisitionSetup,
    classes: tuple[str, ...],
    part_refs: tuple[str, ...],
    defect_rate: float,
    max_defects: int,
    channels: int = 1,
) -> Rendered:
    """Render one part image on ``setup`` and its pixel class mask.

    Steps: 1) background and part; 2) chips bite the part; 3) other defects; 4) nuisances;
    5) acquisition (light, blur, gamma, noise).
    """
    s = canvas.size
    ref = part_refs[int(rng.integers(len(part_refs)))]
    bg = canvas.background(setup, rng)
    part, tex = canvas.part(ref, rng)
    mask = np.zeros((s, s), np.uint8)
    drawn: list[str] = []
    if rng.random() < defect_rate:
        n = min(1 + int(rng.poisson(0.5)), max_defects)
        drawn = [classes[int(rng.integers(len(classes)))] for _ in range(n)]
    inside = ndimage.distance_transform_edt(part).astype(np.float32)
    # 2) chips first: they change the part's silhouette that the other defects are drawn on.
    if "chip" in drawn:
        for _ in range(drawn.count("chip")):
            bite = canvas.chip(rng, part, inside)
            part = part & ~bite
            mask[bite] = classes.index("chip") + 1
        inside = ndimage.distance_transform_edt(part).astype(np.float32)
    img = np.where(part, tex, bg).astype(np.float32)
    # 3) surface defects, each with its own contrast draw
    for cls in drawn:
        if cls == "chip":
            continue
        dmask, delta = canvas.defect(cls, rng, img, inside, _uniform(rng, setup.defect_contrast))
        dmask &= part
        img = img + delta * part
        mask[dmask] = classes.index(cls) + 1
    # 4) healthy nuisances: counts are Poisson with the setup's rate
    nuis: list[str] = []
    for name, rate in setup.nuisances.items():
        for _ in range(int(rng.poisson(rate))):
            img = img + canvas.nuisance(name, rng, inside) * part
            nuis.append(name)
    img = canvas.acquire(img, setup, rng)
    if channels == 3:  # a mild colour cast per draw: RGB cameras are never perfectly balanced
        tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.03, 3)
        img = np.clip(img[..., None] * tint[None, None, :], 0, 1).astype(np.float32)
    return Rendered(img, mask, ref, tuple(drawn), tuple(nuis))
