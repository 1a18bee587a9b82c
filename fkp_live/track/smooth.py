"""Kalman smoothing of a face's keypoints, in units of the face's size.

One constant-velocity Kalman filter models ONE coordinate; every coordinate of the face
shares its covariance and therefore its gain, so the whole (2, 2N) state is updated as a vector
with that gain. A full 2N-dimensional filter would cost O(N^3) per frame for the same answer,
since all coordinates have the same motion model and noise.

The filter's noise is expressed in face-size units: measurement noise is `noise` x the face scale
(inter-ocular distance or crop side), and the motion gate compares innovations with that same
scale, so a small face far away and a large one close by are smoothed alike. (The state itself is
kept in pixels, with the gain computed in normalised units: dividing the coordinates by a scale
that changes from frame to frame would itself inject motion.)

A still face gets heavy smoothing; when a face moves faster than the filter predicts (normalised
innovation above `gate`), the shared covariance is inflated for that frame so the gain rises and the
output does not trail the face; a jump of more than `jump` face scales resets the filter. The mean
innovation is normalised by what it holds on a still face: the prediction's uncertainty, the
points' own noise averaged over the points, and the noise they share (a model's errors partly move
every point together), measured on the frames the gate passes and capped at `shared_cap` times the
averaged noise, so that motion cannot teach the gate to ignore motion.
"""
from __future__ import annotations

import math

import numpy as np


# Measured with the shipped models on the demo face over 600 frames (`_demo_smoothing` in
# fkp_live.commands.bench): a still face with camera-like pixel noise gets 10.1x less jitter with
# `fast` and 11.3x with `accurate`; a moving one lags 0.05 and 0.15 frames.
DEFAULT_STRENGTH = 4.0


def _accel_var(strength: float) -> float:
    # variance of the unpredicted acceleration (face scales per frame^2); each +1 of strength
    # divides it by 10. Strength 1 gives >= 5x less jitter on a still face at 1% landmark noise.
    return 10.0 ** (-6.0 - strength)


def process_noise(strength: float) -> tuple[float, float, float]:
    """(Q00, Q01, Q11) of the constant-velocity model, dt = 1 frame: a white-noise acceleration of
    variance `_accel_var(strength)`, what filterpy's Q_discrete_white_noise(2, 1, var) gives."""
    var = _accel_var(strength)
    return 0.25 * var, 0.5 * var, var


class KeypointSmoother:
    """Smooth one face's keypoints frame by frame: `smoother(points (N, 2), scale_px) -> (N, 2)`.

        >>> import numpy as np
        >>> sm = KeypointSmoother(4.0)
        >>> still = np.array([[10.0, 20.0], [30.0, 20.0], [20.0, 35.0]])
        >>> out = [sm(still + np.random.default_rng(i).normal(0, 0.5, still.shape), 20.0) for i in range(30)]
        >>> float(np.abs(out[-1] - still).max()) < 0.5
        True
    """

    def __init__(self, strength: float = 1.0, noise: float = 0.02, gate: float = 1.0, jump: float = 0.5,
                 adapt: float = 0.05, shared_cap: float = 2.0):
        if not strength >= 0:  # also NaN
            raise ValueError(f"smoothing strength must be >= 0, not {strength}")
        self.strength = float(strength)
        self.noise0 = float(noise)  # prior landmark noise (face scales) until measured
        self.gate = float(gate)
        self.jump = float(jump)
        self.adapt = float(adapt)
        self.shared_cap = float(shared_cap)
        # the per-frame predict/update of the shared 2x2 covariance is a handful of float
        # operations below, the same equations as filterpy's KalmanFilter (Joseph form); importing
        # filterpy (and SciPy under it) would cost a second on the first frame
        self._q = process_noise(self.strength)
        self._state: np.ndarray | None = None  # (2, M): positions and velocities, pixels
        self._k = (0.0, 0.0)
        self.reset()

    def reset(self) -> None:
        self._state = None
        self._noise_var = self.noise0 ** 2
        self._shared_var = self.noise0 ** 2
        self._p = (self._noise_var, 0.0, self._noise_var)  # P00, P01 (= P10), P11

    @property
    def gain(self) -> np.ndarray:
        """The Kalman gain (position, velocity) of the last update."""
        return np.array(self._k)

    def __call__(self, points: np.ndarray, scale: float) -> np.ndarray:
        """Raw (N, 2) keypoints and the face scale in pixels -> smoothed (N, 2) keypoints."""
        if self.strength == 0:
            return np.asarray(points, dtype=np.float32)
        z = np.asarray(points, dtype=np.float64).reshape(-1)
        s = max(float(scale), 1e-6)
        if self._state is None or self._state.shape[1] != z.size:
            return self._restart(z)
        st = self._state
        x0 = st[0] + st[1]  # predicted positions (constant velocity), every coordinate at once
        p00, p01, p11 = self._p
        q00, q01, q11 = self._q
        p00, p01, p11 = p00 + 2 * p01 + p11 + q00, p01 + p11 + q01, p11 + q11  # F P F' + Q
        dz = z - x0
        innov = (dz * (1.0 / s)).reshape(-1, 2)  # face-scale units from here on
        n = len(innov)
        mean = innov.sum(axis=0) * (1.0 / n)
        if _median_abs(innov) > self.jump:
            return self._restart(z)
        if n > 2:
            # Landmark noise is incoherent across points while head motion moves them together, so
            # the residual around the mean innovation measures the noise (minus the prediction's
            # own uncertainty) and the mean innovation measures unpredicted motion.
            spread = (innov - mean).ravel()
            r = float(spread @ spread) / (2 * (n - 1)) - p00  # unbiased variance per coordinate
            self._noise_var = self._follow(self._noise_var, r)
            averaged = self._noise_var / n  # the points' own noise in their mean
            # A model's errors also move all points together (a still face's crop shifts by a hair
            # and every point follows): that shared noise is measured from the mean innovation on
            # the frames the gate passes, and the gate counts it
            m2 = float(mean @ mean) * 0.5  # per coordinate
            nu = math.sqrt(m2 / (p00 + self._shared_var + averaged))
            if nu > self.gate:
                # moving faster than predicted: widen the shared uncertainty so the face is followed
                f = (nu / self.gate) ** 2
                p00, p01, p11 = p00 * f, p01 * f, p11 * f
            else:
                shared_var = self._follow(self._shared_var, m2 - p00 - averaged)
                self._shared_var = min(shared_var, self.shared_cap * averaged)
        r = self._noise_var
        sv = p00 + r
        k0, k1 = p00 / sv, p01 / sv
        # Joseph form: P = (I - KH) P (I - KH)' + K R K'
        a00, a01 = (1 - k0) * p00, (1 - k0) * p01
        a10, a11 = p01 - k1 * p00, p11 - k1 * p01
        self._p = (a00 * (1 - k0) + r * k0 * k0, -a00 * k1 + a01 + r * k0 * k1, -a10 * k1 + a11 + r * k1 * k1)
        self._k = (k0, k1)
        st[1] += k1 * dz  # the state is updated in place: velocities, then positions
        x0 += k0 * dz
        st[0] = x0
        return x0.reshape(-1, 2).astype(np.float32)

    def _follow(self, var: float, sample: float) -> float:
        """A variance estimate moved towards one frame's `sample`, which is clipped to (0, 4 var]
        first so that one odd frame cannot throw it."""
        sample = min(max(sample, 1e-8), 4 * var + 1e-6)
        return var + self.adapt * (sample - var)

    def _restart(self, z: np.ndarray) -> np.ndarray:
        noise, shared = self._noise_var, self._shared_var
        self.reset()
        if noise != self.noise0 ** 2:
            self._noise_var, self._shared_var = noise, shared  # keep the measured noise across a reset
        self._state = np.vstack([z, np.zeros_like(z)])
        return z.reshape(-1, 2).astype(np.float32)


# ------------------------------------------------------------------------------ measurement
def _median_abs(a: np.ndarray) -> float:
    """np.median(np.abs(a)) through one partial sort (np.median's own checks cost 6x more here)."""
    f = np.abs(a).ravel()
    k = f.size // 2
    if f.size % 2:
        return float(np.partition(f, k)[k])
    p = np.partition(f, (k - 1, k))
    return 0.5 * float(p[k - 1] + p[k])


def jitter(track: np.ndarray, scale: float | np.ndarray) -> float:
    """Mean frame-to-frame point movement over the face scale. track: (T, N, 2)."""
    d = np.linalg.norm(np.diff(track, axis=0), axis=-1).mean(axis=-1)
    s = np.asarray(scale, dtype=np.float64)
    s = s[1:] if s.ndim else s
    return float(np.mean(d / s))


def lag(output: np.ndarray, truth: np.ndarray, max_lag: float = 5.0) -> float:
    """Delay in frames of `output` behind `truth` ((T, N, 2) each): the shift that best aligns
    them (least squares over shifts in 0.05-frame steps, truth linearly interpolated)."""
    T = len(truth)
    t = np.arange(T, dtype=np.float64)
    flat_t = truth.reshape(T, -1)
    flat_o = output.reshape(T, -1)
    lo = int(math.ceil(max_lag)) + 1
    best, best_err = 0.0, math.inf
    for tau in np.arange(-max_lag, max_lag + 1e-9, 0.05):
        src = t[lo:T - lo] - tau
        i0 = np.floor(src).astype(int)
        f = (src - i0)[:, None]
        shifted = flat_t[i0] * (1 - f) + flat_t[i0 + 1] * f
        err = float(np.mean((flat_o[lo:T - lo] - shifted) ** 2))
        if err < best_err:
            best, best_err = float(tau), err
    return best


def synthetic_track(frames: int = 300, points: int = 68, noise: float = 0.01, moving: bool = True,
                    face: float = 100.0, seed: int = 0, speed: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """A face shape of `points` points, still or moving like the demo face (translation, roll and
    zoom at 30 fps; `speed` times faster), with Gaussian landmark noise of `noise` x the inter-ocular distance `face`.
    Returns (noisy (T, N, 2), truth (T, N, 2), inter-ocular distance)."""
    from ..io.sources import smooth_motion  # the demo's path

    rng = np.random.default_rng(seed)
    shape = rng.uniform(-1.2, 1.2, size=(points, 2)) * face
    truth = np.empty((frames, points, 2))
    for i in range(frames):
        m = smooth_motion(speed * i / 30.0, 2.0 if moving else 0.0)
        c, s = math.cos(m.angle) * m.scale, math.sin(m.angle) * m.scale
        rot = np.array([[c, -s], [s, c]])
        truth[i] = shape @ rot.T + np.array([320 + 3 * m.tx, 240 + 3 * m.ty])
    noisy = truth + rng.normal(0, noise * face, size=truth.shape)
    return noisy, truth, face


def smooth_track(track: np.ndarray, scale: float, strength: float = 1.0) -> np.ndarray:
    sm = KeypointSmoother(strength)
    return np.stack([sm(p, scale) for p in track])
