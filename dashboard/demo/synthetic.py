"""Synthetic X-ray radiograph stacks that look like a real beamline time series.

The model is a projection radiograph through a sample in a vertical capillary:

* **Beam** — a separable super-Gaussian profile (wide horizontally, narrower vertically), with
  monochromator stripes along the vertical axis that drift slowly, a radial vignetting
  (darker corners), a few scintillator defects, and a storage-ring intensity that decays and
  jitters from frame to frame.
* **Sample** (Beer-Lambert, ``I = I0 * exp(-sum(mu * t))``) — a hollow glass capillary that drifts
  sideways with the stage, a liquid front rising inside it, and spherical particles (bubbles /
  grains) that drift and grow over the scan.
* **Detector** — a dark offset with a fixed pattern, Poisson-like shot noise (Gaussian with
  variance proportional to the counts), read noise, a few hot pixels, uint16 counts.

Everything is deterministic for a given seed, and every frame can be generated on its own, in any
order (frame ``i`` draws its random numbers from ``default_rng([seed, i])``), so a stack is never
held in memory: frames are produced one at a time. The static parts (beam profile, vignetting,
dark pattern) are precomputed once and the noise comes from a few pre-generated Gaussian fields
viewed at random offsets, so a 1024 × 1024 frame costs a few milliseconds.

Examples
--------
>>> sim = RadiographSimulator(frames=40, height=256, width=256, seed=1)
>>> frame = sim.frame(0)
>>> frame.shape, frame.dtype
((256, 256), dtype('uint16'))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Bump whenever the generated pixels change: the on-disk cache is keyed by it.
GENERATOR_VERSION = "2"

_NOISE_FIELDS = 3  # pre-generated Gaussian noise fields
_NOISE_PAD = 64  # extra rows/columns so the fields can be viewed at random offsets


@dataclass(frozen=True)
class _Particle:
    x0: float  # centre at t=0, fraction of width
    y0: float  # centre at t=0, fraction of height
    vx: float  # drift over the whole scan, fraction of width
    vy: float  # drift over the whole scan, fraction of height
    r0: float  # radius at t=0, fraction of width
    growth: float  # radius multiplier at t=1
    mu: float  # attenuation per pixel of path (1/px, at 1024 px scale); negative: a void/bubble


class RadiographSimulator:
    """Generate a reproducible stack of uint16 radiographs, frame by frame.

    Parameters
    ----------
    frames : int
        Number of frames in the scan (the time axis).
    height, width : int
        Frame shape in pixels.
    seed : int
        Seed for every random choice; equal seeds give identical stacks.
    peak_counts : float
        Mean detector counts at the centre of the open beam (before the sample).
    dark_level : float
        Mean dark offset in counts.
    gain : float
        Counts per detected photon; the shot-noise variance is ``gain * counts``.
    particles : int
        Number of moving, growing particles inside the capillary.

    Notes
    -----
    Lengths are fractions of the frame size, so a 256 × 256 stack shows the same scene as a
    1024 × 1024 one.
    """

    def __init__(
        self,
        frames: int = 200,
        height: int = 1024,
        width: int = 1024,
        *,
        seed: int = 0,
        peak_counts: float = 24000.0,
        dark_level: float = 100.0,
        gain: float = 0.5,
        particles: int = 24,
    ):
        if frames < 1 or height < 16 or width < 16:
            raise ValueError("a stack needs at least 1 frame of at least 16 x 16 pixels")
        self.frames, self.height, self.width = int(frames), int(height), int(width)
        self.seed = int(seed)
        self.peak_counts = float(peak_counts)
        self.dark_level = float(dark_level)
        self.gain = float(gain)
        rng = np.random.default_rng([self.seed, 0xBEA])
        h, w = self.height, self.width
        self._y = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        self._x = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        self._px = np.arange(w, dtype=np.float32)

        # Beam: separable super-Gaussian, stripes along y (drifting), static 2-D vignetting.
        self._beam_x = np.exp(-np.abs(self._x / 0.95) ** 3.0).astype(np.float32)
        self._stripe_k = rng.uniform(6.0, 40.0, size=5)
        self._stripe_a = rng.uniform(0.004, 0.02, size=5)
        self._stripe_phase = rng.uniform(0, 2 * np.pi, size=5)
        yy, xx = np.meshgrid(self._y, self._x, indexing="ij")
        radius2 = xx * xx + yy * yy
        vignette = (1.0 / (1.0 + 0.18 * radius2)) ** 2  # cos^4-like fall-off towards the corners
        # Scintillator defects: small, static, slightly darker spots.
        for _ in range(6):
            cy, cx = rng.uniform(-0.8, 0.8, size=2)
            s = rng.uniform(0.004, 0.012)
            vignette *= 1.0 - rng.uniform(0.05, 0.25) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)
            )
        self._vignette = vignette.astype(np.float32)
        del yy, xx, radius2

        # Detector: dark offset with a column pattern and a little 2-D fixed pattern, hot pixels.
        dark = np.full((h, w), self.dark_level, dtype=np.float32)
        dark += rng.normal(0.0, 3.0, size=w).astype(np.float32)[None, :]
        dark += rng.normal(0.0, 1.5, size=(h, w)).astype(np.float32)
        self._dark = dark
        n_hot = max(1, h * w // 50000)
        self._hot = (rng.integers(0, h, n_hot), rng.integers(0, w, n_hot))
        self._hot_value = rng.uniform(2000, 9000, n_hot).astype(np.float32)

        # Noise: a few standard-normal fields, viewed at random offsets per frame.
        self._noise = [
            rng.standard_normal((h + _NOISE_PAD, w + _NOISE_PAD), dtype=np.float32)
            for _ in range(_NOISE_FIELDS)
        ]

        # Sample: a capillary (outer/inner radius, fraction of width) with a rising liquid front.
        self._cap_x0 = rng.uniform(-0.05, 0.05)
        self._cap_drift = rng.uniform(0.02, 0.06) * rng.choice([-1.0, 1.0])
        self._cap_r_out, self._cap_r_in = 0.36, 0.33
        self._front_start, self._front_end = rng.uniform(0.55, 0.75), rng.uniform(-0.35, -0.1)
        self._front_k = rng.uniform(2.0, 5.0, size=3)
        self._front_a = rng.uniform(0.004, 0.015, size=3)
        self._particles = [self._random_particle(rng) for _ in range(particles)]

    def _random_particle(self, rng: np.random.Generator) -> _Particle:
        return _Particle(
            x0=rng.uniform(-0.28, 0.28),
            y0=rng.uniform(-0.9, 0.9),
            vx=rng.uniform(-0.08, 0.08),
            vy=rng.uniform(-0.5, 0.1),  # mostly rising, like bubbles
            r0=rng.uniform(0.008, 0.035),
            growth=rng.uniform(1.0, 2.2),
            mu=float(rng.choice([-1.0, 1.0], p=[0.4, 0.6]) * rng.uniform(0.002, 0.006)),
        )

    # -- public API -----------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(frames, height, width)``."""
        return (self.frames, self.height, self.width)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` of the scan, a ``(height, width)`` uint16 array."""
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} out of range for {self.frames} frames")
        t = index / max(self.frames - 1, 1)
        rng = np.random.default_rng([self.seed, 1, index])
        beam = self._beam(t, rng)
        counts = beam * np.exp(-self._attenuation(t))
        return self._detect(counts, rng)

    def frames_iter(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames ``start … stop-1`` one at a time (never the whole stack in memory)."""
        for i in range(start, self.frames if stop is None else stop):
            yield self.frame(i)

    __iter__ = frames_iter

    def __len__(self) -> int:
        return self.frames

    def white(self, index: int) -> np.ndarray:
        """An open-beam (flat, "white") frame, taken with the sample out just before the scan."""
        rng = np.random.default_rng([self.seed, 2, index])
        return self._detect(self._beam(0.0, rng), rng)

    def dark(self, index: int) -> np.ndarray:
        """A dark frame: shutter closed, offset and read noise only."""
        rng = np.random.default_rng([self.seed, 3, index])
        return self._detect(np.zeros((self.height, self.width), dtype=np.float32), rng)

    # -- model ----------------------------------------------------------------------------

    def _beam(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """Open-beam intensity (counts) at scan time ``t`` in [0, 1]."""
        y = self._y + np.float32(0.01 * np.sin(2 * np.pi * 1.3 * t))  # slow vertical beam motion
        stripes = 1.0 + np.sum(
            self._stripe_a[:, None]
            * np.sin(self._stripe_k[:, None] * np.pi * y[None, :] + self._stripe_phase[:, None]),
            axis=0,
        )
        beam_y = (np.exp(-np.abs(y / 0.8) ** 2.5) * stripes).astype(np.float32)
        current = self.peak_counts * (1.0 - 0.06 * t) * (1.0 + rng.normal(0.0, 0.004))
        beam = np.multiply.outer(beam_y * np.float32(current), self._beam_x)
        beam *= self._vignette
        return beam

    def _attenuation(self, t: float) -> np.ndarray:
        """``sum(mu * thickness)`` through the sample at scan time ``t``, float32 (h, w)."""
        h, w = self.height, self.width
        scale = w / 2.0  # pixels per unit of the [-1, 1] coordinate
        cx = self._cap_x0 + self._cap_drift * t
        dx = self._x - np.float32(cx)
        outer = np.sqrt(np.clip(self._cap_r_out**2 - dx * dx, 0, None))
        inner = np.sqrt(np.clip(self._cap_r_in**2 - dx * dx, 0, None))
        wall = 2.0 * (outer - inner) * scale  # glass path length in pixels
        bore = 2.0 * inner * scale  # path length through the inside

        # Glass walls (constant along y) plus the liquid below a wavy, rising front.
        mu_glass, mu_liquid = 0.0016 * 1024 / w, 0.0009 * 1024 / w
        front = self._front_start + (self._front_end - self._front_start) * t
        front = front + sum(
            a * np.sin(k * np.pi * dx + 7.0 * t) for a, k in zip(self._front_a, self._front_k)
        )
        # y grows downwards in the image: liquid fills rows with y > front(x).
        edge = np.float32(0.004 * h / 2)  # a slightly soft meniscus (pixels)
        filled = 0.5 + 0.5 * np.tanh(
            (self._y[:, None] - front[None, :].astype(np.float32)) * np.float32(h / 2) / edge
        )
        att = filled * (mu_liquid * bore).astype(np.float32)[None, :]
        att += (mu_glass * wall).astype(np.float32)[None, :]

        for p in self._particles:
            self._add_particle(att, p, t, cx)
        return att

    def _add_particle(self, att: np.ndarray, p: _Particle, t: float, cx: float) -> None:
        """Add one sphere's projected thickness ``2*sqrt(r^2 - d^2)`` inside its bounding box."""
        h, w = att.shape
        r = p.r0 * (1.0 + (p.growth - 1.0) * t) * w / 2.0
        px = (cx + p.x0 + p.vx * t + 1.0) * w / 2.0
        py = ((p.y0 + p.vy * t + 1.0) % 2.0) * h / 2.0  # wraps: a new bubble enters at the bottom
        y0, y1 = max(int(py - r), 0), min(int(py + r) + 2, h)
        x0, x1 = max(int(px - r), 0), min(int(px + r) + 2, w)
        if y0 >= y1 or x0 >= x1:
            return
        dy = np.arange(y0, y1, dtype=np.float32) - np.float32(py)
        dx = self._px[x0:x1] - np.float32(px)
        d2 = dy[:, None] ** 2 + dx[None, :] ** 2
        chord = 2.0 * np.sqrt(np.clip(np.float32(r * r) - d2, 0, None))
        att[y0:y1, x0:x1] += np.float32(p.mu * 1024 / w) * chord

    def _detect(self, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Detector response: shot noise, dark offset, read noise, hot pixels, uint16."""
        h, w = self.height, self.width
        a, b = rng.choice(_NOISE_FIELDS, size=2, replace=False)
        (ay, ax), (by, bx) = rng.integers(0, _NOISE_PAD + 1, size=(2, 2))
        noise = self._noise[a][ay : ay + h, ax : ax + w] + self._noise[b][by : by + h, bx : bx + w]
        # Two independent unit normals summed have variance 2: fold 1/sqrt(2) into the scale.
        sigma = np.sqrt(counts * np.float32(self.gain) + np.float32(4.0)) * np.float32(0.5**0.5)
        out = counts + self._dark
        out += sigma * noise
        out[self._hot] += self._hot_value
        np.clip(out, 0, 65535, out=out)
        return np.rint(out, out=out).astype(np.uint16)
