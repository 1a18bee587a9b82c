"""Kalman smoothing of a face's keypoints, in units of the face's size.

One constant-velocity Kalman filter (filterpy) models ONE coordinate; every coordinate of the face
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
output does not trail the face; a jump of more than `jump` face scales resets the filter.
"""
from __future__ import annotations

import math

import numpy as np


# Measured with the shipped models on the demo face (`fkp-live bench`): a still face with
# camera-like pixel noise gets 5.1x less jitter at strength 3, 5.9x at 4 (4.9x at 5, where the
# noise estimate starts to lag) with session 1's ibug68; 6.1x at 4 with today's default (ibug68.int8)
# and about 8x with ibug68-accurate; a moving one no measurable lag (< 0.2 frame) at any of them.
# The model's errors move all points together, which the filter reads partly as motion, so it
# needs more smoothing than incoherent synthetic noise does.
DEFAULT_STRENGTH = 4.0


def _accel_var(strength: float) -> float:
    # variance of the unpredicted acceleration (face scales per frame^2); each +1 of strength
    # divides it by 10. Strength 1 gives >= 5x less jitter on a still face at 1% landmark noise.
    return 10.0 ** (-6.0 - strength)


class KeypointSmoother:
    def __init__(self, strength: float = 1.0, noise: float = 0.02, gate: float = 4.0, jump: float = 0.5,
                 adapt: float = 0.05):
        if strength < 0:
            raise ValueError(f"smoothing strength must be >= 0, not {strength}")
        self.strength = float(strength)
        self.noise0 = float(noise)  # prior landmark noise (face scales) until measured
        self.gate = float(gate)
        self.jump = float(jump)
        self.adapt = float(adapt)
        # filterpy (and SciPy under it) load here, not at import: `fkp-live --help` stays quick
        from filterpy.common import Q_discrete_white_noise
        from filterpy.kalman import KalmanFilter

        self._kf = KalmanFilter(dim_x=2, dim_z=1)  # ONE coordinate, in face-scale units
        self._kf.F = np.array([[1.0, 1.0], [0.0, 1.0]])
        self._kf.H = np.array([[1.0, 0.0]])
        self._kf.Q = Q_discrete_white_noise(dim=2, dt=1.0, var=_accel_var(self.strength))
        self._state: np.ndarray | None = None  # (2, M): positions and velocities, pixels
        self.reset()

    def reset(self) -> None:
        self._state = None
        self._noise_var = self.noise0 ** 2
        self._kf.x = np.zeros((2, 1))
        self._kf.R = np.array([[self._noise_var]])
        self._kf.P = np.diag([self._noise_var, self._noise_var])

    @property
    def gain(self) -> np.ndarray:
        return self._kf.K.ravel().copy()

    @property
    def noise(self) -> float:
        """The landmark noise measured so far, in face scales."""
        return math.sqrt(self._noise_var)

    def __call__(self, points: np.ndarray, scale: float) -> np.ndarray:
        """Raw (N, 2) keypoints and the face scale in pixels -> smoothed (N, 2) keypoints."""
        if self.strength == 0:
            return np.asarray(points, dtype=np.float32)
        z = np.asarray(points, dtype=np.float64).reshape(-1)
        s = max(float(scale), 1e-6)
        if self._state is None or self._state.shape[1] != z.size:
            return self._restart(z)
        kf = self._kf
        x = kf.F @ self._state  # predict, every coordinate at once
        kf.predict()
        innov = (z - x[0]).reshape(-1, 2) / s  # face-scale units from here on
        n = len(innov)
        mean = innov.mean(axis=0)
        spread = innov - mean
        if float(np.median(np.abs(innov))) > self.jump:
            return self._restart(z)
        pvar = float(kf.P[0, 0])
        if n > 2:
            # Landmark noise is incoherent across points while head motion moves them together, so
            # the residual around the mean innovation measures the noise (minus the prediction's
            # own uncertainty) and the mean innovation measures unpredicted motion.
            r = float(np.mean(spread ** 2)) * n / (n - 1) - pvar
            r = min(max(r, 1e-8), 4 * self._noise_var + 1e-6)
            self._noise_var += self.adapt * (r - self._noise_var)
            kf.R[0, 0] = self._noise_var
            nu = float(np.linalg.norm(mean)) / math.sqrt((pvar + self._noise_var) / n)
            if nu > self.gate:
                # moving faster than predicted: widen the shared uncertainty so the face is followed
                kf.P = kf.P * (nu / self.gate) ** 2
        # filterpy computes the shared gain; its own 1-D state stays at zero (z = 0 keeps it there)
        kf.update(np.zeros(1))
        self._state = x + kf.K @ (innov.reshape(1, -1) * s)
        return self._state[0].reshape(-1, 2).astype(np.float32)

    def predicted(self) -> np.ndarray | None:
        """Where the filter expects the points in the next frame (N, 2), None before any."""
        if self._state is None:
            return None
        return (self._state[0] + self._state[1]).reshape(-1, 2).astype(np.float32)

    def _restart(self, z: np.ndarray) -> np.ndarray:
        noise = self._noise_var
        self.reset()
        if self._state is None and noise != self.noise0 ** 2:
            self._noise_var = noise  # keep the measured noise level across a reset
            self._kf.R[0, 0] = noise
        self._state = np.vstack([z, np.zeros_like(z)])
        return z.reshape(-1, 2).astype(np.float32)


# ------------------------------------------------------------------------------ measurement
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
    from ..io.sources import smooth_motion

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
