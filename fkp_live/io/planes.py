"""I420 pictures between PyAV's frames and numpy, copied with the GIL released.

The runtime keeps a video's pictures as I420 in one (H * 3 / 2, W) uint8 array: the Y plane, then
U, then V, each packed (OpenCV's layout). A decoded frame's planes are read into it, and the drawn
picture is copied back into a new frame for the encoder. PyAV's own `to_ndarray` and
`VideoFrame.from_ndarray` do the same, more slowly, and `from_ndarray` holds the GIL while it
copies, which the tracker's thread then waits for. Measured beside a thread that spins on the GIL
(`time.thread_time`, 400 frames): from_ndarray 0.20 ms of CPU for a 512x512 frame, 0.47 ms at
1920x1080, all of it holding the GIL; to_ndarray 0.22 and 0.67 ms against 0.10 and 0.58 here.
"""
from __future__ import annotations

import numpy as np


def _views(frame, h: int, w: int) -> list[np.ndarray]:
    """The frame's Y, U and V planes as writable (rows, columns) views, their line padding cut."""
    return [np.frombuffer(plane, np.uint8).reshape(ph, plane.line_size)[:, :pw]
            for plane, (ph, pw) in zip(frame.planes, ((h, w), (h // 2, w // 2), (h // 2, w // 2)))]


def packed_planes(i420: np.ndarray, h: int, w: int) -> list[np.ndarray]:
    """The Y, U and V planes of a packed I420 array (C-contiguous), as (rows, columns) views of it."""
    flat, n, c = i420.reshape(-1), h * w, (h // 2) * (w // 2)
    return [i420[:h], flat[n:n + c].reshape(h // 2, w // 2),
            flat[n + c:n + 2 * c].reshape(h // 2, w // 2)]


def i420_of(frame) -> np.ndarray:
    """A decoded yuv420p `av.VideoFrame` of even size -> its planes, packed (a copy)."""
    h, w = frame.height, frame.width
    out = np.empty((h * 3 // 2, w), np.uint8)
    for dst, src in zip(packed_planes(out, h, w), _views(frame, h, w)):
        np.copyto(dst, src)
    return out


def video_frame_of(i420: np.ndarray):
    """Packed I420 planes ((H * 3 / 2, W) uint8, H and W even) -> a new yuv420p `av.VideoFrame`."""
    import av

    h, w = i420.shape[0] * 2 // 3, i420.shape[1]
    frame = av.VideoFrame(w, h, "yuv420p")
    for dst, src in zip(_views(frame, h, w), packed_planes(np.ascontiguousarray(i420), h, w)):
        np.copyto(dst, src)
    return frame
