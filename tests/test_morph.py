"""Face morphing: the warp, the mesh, the live overlay, and the `morph` / `average` commands.

Real faces: matplotlib's grace_hopper.jpg (always there) and 300-W faces from ../shared/data when
present. Pictures are kept small so every test takes a second or two on two cores.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import DATA, needs_data, needs_shipped_model
from fkp_live.frame import Frame
from fkp_live.commands.morph import average, morph
from fkp_live.render import morph as M

HELEN = DATA / "300w" / "helen_train"


def _face(pts):
    from fkp_live.track.tracker import Face

    return Face(0, (0, 0, 1, 1), pts, pts, 1.0, None)


def mirrored(img, pts):
    """A picture flipped left-right, and its points (renumbered by the scheme's mirror)."""
    from fkp_live import schemas

    flip = pts[schemas.get("ibug68").mirror_array()].copy()
    flip[:, 0] = img.shape[1] - 1 - flip[:, 0]
    return img[:, ::-1].copy(), flip


def grace_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def tracker():
    from fkp_live.track.tracker import Tracker

    t = Tracker(device="cpu", max_faces=16, smooth=0.0)
    yield t
    t.close()


@pytest.fixture(scope="module")
def grace(tracker):
    """Grace Hopper at half size (256x300) and her 68 points found by the shipped model."""
    img = cv2.imread(str(grace_path()))
    small = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    pts = M.face_points(small, tracker, "grace")
    return small, pts


def write_pts(path: Path, pts: np.ndarray) -> Path:
    lines = ["version: 1", f"n_points:  {len(pts)}", "{"] + [f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts] + ["}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(cmd, args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


# ----------------------------------------------------------------------------------------------
# the mesh and the warp (no model)
def test_delaunay_orientation_duplicates_and_similarity():
    pts = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5], [5, 5], [2, 7]], float)
    tris = M.delaunay(pts)
    assert len(tris) and (M.signed_areas(pts, tris) > 0).all()
    assert 5 not in tris or 4 not in tris  # coinciding points merged, no zero-area triangle
    src = np.array([[1.0, 2.0], [4.0, 6.0]])
    dst = np.array([[10.0, 10.0], [10.0, 20.0]])
    np.testing.assert_allclose(M.apply_affine(M.similarity(src, dst), src), dst, atol=1e-9)


def test_degenerate_triangles_do_not_crash():
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)
    src = np.vstack([M.boundary_points(50, 40), [[20, 20], [30, 20], [25, 30]]])
    tris = M.delaunay(src)
    dst = src.copy()
    dst[8:] = [25, 22]  # the inner triangle collapses to a point, its neighbours get thin
    out = M.warp(img, src, dst, tris)
    assert out.shape == img.shape
    dst2 = src.copy()
    dst2[10] = [25, 10]  # pushed through the opposite edge: folded
    out2 = M.warp(img, src, dst2, tris)
    assert out2.shape == img.shape and M.fold_fraction(dst2, tris) > 0
    from fkp_live.render.morph.warping import _coefficients

    c = _coefficients(src, dst, tris)
    assert np.isfinite(c).all()


@needs_shipped_model
def test_warp_to_own_shape_is_identity(grace):
    img, pts = grace
    h, w = img.shape[:2]
    shape = M.picture_shape(pts, (w, h))
    tris = M.delaunay(M.triangulation_shape(shape))
    out = M.warp(img, shape, shape, tris)
    diff = np.abs(out.astype(int) - img.astype(int))
    assert diff.mean() < 1.0, diff.mean()
    m = M.Morph([M.Subject(img, pts), M.Subject(img, pts)])
    assert np.abs(m.image(0, 0.0).astype(int) - img.astype(int)).mean() < 1.0


@needs_shipped_model
def test_every_hull_pixel_in_exactly_one_triangle(grace):
    img, pts = grace
    shape = M.triangulation_shape(M.face_shape(pts))
    tris = M.delaunay(shape)
    hull = cv2.convexHull(shape.astype(np.float32)).reshape(-1, 2)
    # the triangles tile the hull: their areas add up to its area, none turned over
    areas = M.signed_areas(shape, tris) / 2
    assert (areas > 0).all()
    assert abs(areas.sum() - cv2.contourArea(hull)) < 1e-3 * areas.sum()
    x0, y0 = np.floor(shape.min(0)).astype(int)
    x1, y1 = np.ceil(shape.max(0)).astype(int)
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    inside = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), True) for x, y in px])
    # barycentric test of every pixel centre against every triangle
    a, b, c = (shape[tris[:, k]] for k in range(3))
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    dx, dy = px[:, :1] - c[None, :, 0], px[:, 1:] - c[None, :, 1]
    l1 = ((b[:, 1] - c[:, 1])[None] * dx + (c[:, 0] - b[:, 0])[None] * dy) / den
    l2 = ((c[:, 1] - a[:, 1])[None] * dx + (a[:, 0] - c[:, 0])[None] * dy) / den
    lam = np.stack([l1, l2, 1 - l1 - l2], 2)
    strictly = (lam > 1e-9).all(2).sum(1)
    loosely = (lam > -1e-9).all(2).sum(1)
    interior = inside > 0.5
    assert (loosely[inside > 1e-3] >= 1).all()  # no hole
    on_edge = strictly != loosely
    assert (strictly[interior & ~on_edge] == 1).all()  # no overlap
    # the rasterised id map has a triangle for every pixel inside the hull
    ids = M.triangle_ids(shape, tris, (int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)))
    assert (ids.ravel()[inside > 1e-3] > 0).all()
    # the real (lips closed) shape is hardly folded
    assert M.fold_fraction(M.face_shape(pts), tris) < 0.006


def test_points_readers(tmp_path):
    pts = np.random.default_rng(1).uniform(10, 100, (68, 2))
    np.testing.assert_allclose(M.read_points(write_pts(tmp_path / "a.pts", pts)), pts, atol=1e-3)
    from fkp_live.io.text import CsvSink
    from fkp_live.track.tracker import Face

    face = Face(3, (0, 0, 1, 1), pts, pts, 0.9, None)
    with CsvSink(tmp_path / "a.csv", 68, with_source=True) as sink:
        sink.write(Frame(0, None, np.zeros((4, 4, 3), np.uint8), source="other.jpg"), [])
        sink.write(Frame(1, None, np.zeros((4, 4, 3), np.uint8), source="b.jpg"), [face])
    np.testing.assert_allclose(M.read_points(tmp_path / "a.csv", "dir/b.jpg"), pts, atol=0.01)
    (tmp_path / "bad.pts").write_text("n_points: 68\n{\n1 2\n}\n")
    with pytest.raises(M.MorphError, match="bad.pts"):
        M.read_points(tmp_path / "bad.pts")


# ----------------------------------------------------------------------------------------------
# the live morph
@needs_shipped_model
def test_live_alpha_zero_is_the_frame_and_frame_is_never_drawn_on(grace):
    img, pts = grace
    frame = Frame(0, 0.0, img.copy())
    before = frame.image.copy()
    live = M.LiveMorph(*mirrored(img, pts), None, alpha=0.0)
    out = live(frame, [_face(pts)])
    assert out is not frame and out.image is not frame.image
    assert np.array_equal(out.image, before)
    live.alpha = 1.0
    out = live(frame, [_face(pts)])
    assert np.array_equal(frame.image, before)  # the decoded frame is untouched
    changed = np.abs(out.image.astype(int) - before.astype(int)).sum(2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 500
    lo, hi = pts.min(0), pts.max(0)  # the changes stay on the face
    assert xs.min() >= lo[0] - 2 and xs.max() <= hi[0] + 2 and ys.max() <= hi[1] + 2
    assert live.last_fade == [1.0]


@needs_shipped_model
def test_live_seam_is_feathered_and_colour_matched(grace):
    img, pts = grace
    # a dark blue copy as the target: the colour transfer brings it back to the frame's colours
    target = (img * [1.0, 0.4, 0.3]).astype(np.uint8)
    live = M.LiveMorph(target, pts, "ibug68", alpha=1.0)
    out = live.apply(img, [pts])
    face = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(face, np.round(pts[list(M.JAW)]).astype(np.int32), 1)
    inner = cv2.erode(face, np.ones((15, 15), np.uint8)).astype(bool)
    d_in = np.abs(out.astype(int) - img.astype(int))[inner].mean()
    raw = M.LiveMorph(target, pts, alpha=1.0, colour=False).apply(img, [pts])
    d_raw = np.abs(raw.astype(int) - img.astype(int))[inner].mean()
    assert d_raw > 50 and d_in < 0.25 * d_raw, (d_in, d_raw)  # here 74 -> 14 grey levels
    # feathered: no step along the jaw line
    jaw = np.zeros_like(face)
    cv2.polylines(jaw, [np.round(pts[list(M.JAW)]).astype(np.int32)], False, 1, 1)
    assert np.abs(out.astype(int) - img.astype(int))[jaw.astype(bool)].max() <= 12


@needs_shipped_model
def test_live_folded_face_fades_out(grace):
    img, pts = grace
    live = M.LiveMorph((img * 0.5).astype(np.uint8), pts, alpha=1.0)
    # the face squashed towards its right side and then through it: triangles fold
    c = pts[30]
    squash = pts.copy()
    squash[:, 0] = c[0] + (pts[:, 0] - c[0]) * np.where(pts[:, 0] > c[0], -0.5, 1.0)
    out = live.apply(img, [squash])
    assert live.last_fade[0] == 0.0 and np.array_equal(out, img)
    mild = pts.copy()
    mild[:, 0] = c[0] + (pts[:, 0] - c[0]) * np.where(pts[:, 0] > c[0], 0.35, 1.0)
    live.apply(img, [mild])
    assert 0.0 <= live.last_fade[0] <= 1.0
    # nonsense points do not crash
    live.apply(img, [np.full((68, 2), 5.0)])
    live.apply(img, [np.full((68, 2), -500.0)])


@needs_shipped_model
def test_benchmark_runs(tmp_path, grace):
    from fkp_live.io.sources import DemoSource

    frames = [f.image for f in DemoSource(frames=4, size=(256, 192))]
    r = M.benchmark(frames, grace_path(), frames=4, rounds=1)
    assert r["frames"] == 4 and r["tracker_fps"] > 0 and r["morph_fps"] > 0 and r["morph_ms"] > 0


# ----------------------------------------------------------------------------------------------
# the commands
@pytest.fixture(scope="module")
def pics(tmp_path_factory, grace):
    """Two pictures with their .pts files: Grace, and Grace scaled and shifted on a bigger canvas."""
    d = tmp_path_factory.mktemp("pics")
    img, pts = grace
    cv2.imwrite(str(d / "a.png"), img)
    write_pts(d / "a.pts", pts)
    big = np.full((340, 320, 3), 90, np.uint8)
    mat = np.array([[1.1, 0, 20], [0, 1.1, -10]])
    cv2.warpAffine(img, mat, (320, 340), dst=big, borderMode=cv2.BORDER_TRANSPARENT)
    cv2.imwrite(str(d / "b.jpg"), big)
    write_pts(d / "b.pts", M.apply_affine(mat, pts))
    return d


@needs_shipped_model
def test_morph_video_gif_midway(pics, tmp_path):
    import av
    from PIL import Image

    out, gif, mid = tmp_path / "m.mp4", tmp_path / "m.gif", tmp_path / "mid.png"
    r = run_cli(morph, [pics / "a.png", pics / "b.jpg", "--points", pics / "a.pts", "--points", pics / "b.pts",
                        "-o", out, "--frames", 4, "--gif", gif, "--gif-width", 64, "--midway", mid])
    assert r.exit_code == 0, r.output
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (300, 256, 3)  # the first image's size
    assert Image.open(gif).n_frames == 5
    assert cv2.imread(str(mid)).shape == (300, 256, 3)


@needs_shipped_model
def test_morph_still_fracs_and_detection(pics, tmp_path):
    out = tmp_path / "x.png"
    r = run_cli(morph, [pics / "a.png", pics / "b.jpg", "--warp-frac", 0.0, "--dissolve-frac", 0.0, "-o", out])
    assert r.exit_code == 0, r.output  # both faces found by the model
    a = cv2.imread(str(pics / "a.png"))
    assert np.abs(cv2.imread(str(out)).astype(int) - a.astype(int)).mean() < 1.5


@needs_shipped_model
def test_caricature_and_average_from_pts(pics, tmp_path):
    mean_png, mean_json = tmp_path / "mean.png", tmp_path / "shape.json"
    r = run_cli(average, [pics, "-o", mean_png, "--use-pts", "--size", 96, "--save-mean", mean_json])
    assert r.exit_code == 0, r.output
    assert "averaged 2 of 2 faces" in r.output
    assert cv2.imread(str(mean_png)).shape == (96, 96, 3)
    car = tmp_path / "car.png"
    r = run_cli(morph, [pics / "a.png", "--points", pics / "a.pts", "--mean", mean_json, "--warp-frac", 1.8,
                        "-o", car])
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(car)).shape == (300, 256, 3)


@pytest.mark.parametrize("case", ["missing", "unreadable", "noface", "frames0", "nofolder", "isdir", "suffix",
                                  "fracs_video", "face_number", "points_count", "bad_points", "one_image"])
@needs_shipped_model
def test_morph_bad_input(case, pics, tmp_path):
    a, b = pics / "a.png", pics / "b.jpg"
    pa, pb = ["--points", pics / "a.pts"], ["--points", pics / "b.pts"]
    out = tmp_path / "o.mp4"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a picture")
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((64, 64, 3), 128, np.uint8))
    args, expect = {
        "missing": ([tmp_path / "nope.jpg", b, "-o", out], "nope.jpg does not exist"),
        "unreadable": ([junk, b, "-o", out], "cannot read image"),
        "noface": ([grey, b, "-o", out], "no face found in"),
        "frames0": ([a, b, "-o", out, "--frames", 0], "--frames"),
        "nofolder": ([a, b, *pa, *pb, "-o", tmp_path / "no" / "o.mp4"], "does not exist"),
        "isdir": ([a, b, *pa, *pb, "-o", tmp_path], "is a folder"),
        "suffix": ([a, b, "-o", tmp_path / "o.xyz"], "o.xyz"),
        "fracs_video": ([a, b, "-o", out, "--warp-frac", 0.3], "one picture"),
        "face_number": ([a, b, *pa, "-o", out, "--face", "auto", "--face", 3], "--face 3"),
        "points_count": ([a, b, *pa, *pb, *pa, "-o", out], "--points"),
        "bad_points": ([a, b, "--points", junk, "-o", out], "junk.jpg"),
        "one_image": ([a, "-o", tmp_path / "x.png"], "--mean"),
    }[case]
    r = run_cli(morph, args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "fkp-live: error:" in r.output and expect in r.output, r.output
    assert "Traceback" not in r.output


@needs_shipped_model
def test_morph_unwritable_gif(pics, tmp_path):
    ro = tmp_path / "gif.gif"
    ro.mkdir()
    r = run_cli(morph, [pics / "a.png", pics / "b.jpg", "--points", pics / "a.pts", "--points", pics / "b.pts",
                        "--gif", ro])
    assert r.exit_code == 2 and "gif.gif" in r.output and "is a folder" in r.output, r.output


@needs_shipped_model
def test_average_skips_and_reports(tmp_path, grace):
    img, _ = grace
    d = tmp_path / "faces"
    d.mkdir()
    cv2.imwrite(str(d / "1.png"), img)
    (d / "2.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(d / "3.png"), np.full((80, 80, 3), 200, np.uint8))
    r = run_cli(average, [d, "-o", tmp_path / "mean.png", "--size", 64])
    assert r.exit_code == 0, r.output
    assert "averaged 1 of 3 faces" in r.output
    assert "2.jpg (cannot read image" in r.output and "3.png (no face found)" in r.output
    assert (tmp_path / "mean.json").exists()
    (d / "1.png").unlink()
    r = run_cli(average, [d, "-o", tmp_path / "mean.png"])
    assert r.exit_code == 2 and "no face found in any of the 2 images" in r.output
    r = run_cli(average, [tmp_path / "nothere", "-o", tmp_path / "mean.png"])
    assert r.exit_code == 2 and "nothere does not exist" in r.output


@needs_data
@needs_shipped_model
def test_average_of_300w_faces(tmp_path):
    r = run_cli(average, [HELEN, "-o", tmp_path / "m.png", "--limit", 6, "--use-pts", "--size", 128])
    assert r.exit_code == 0, r.output
    shape = M.load_mean(tmp_path / "m.json")
    eyes = M.mean_eye_corners((128, 128))
    np.testing.assert_allclose(shape[list(M.EYE_CORNERS)], eyes, atol=1e-6)
    img = cv2.imread(str(tmp_path / "m.png"))
    assert img.shape == (128, 128, 3) and img.std() > 10


@needs_data
@needs_shipped_model
def test_live_morph_on_300w_faces(tracker):
    files = sorted(HELEN.glob("*.jpg"))[:3]
    target = M.load_image(files[0])
    live = M.LiveMorph(target, M.read_points(files[0].with_suffix(".pts")), tracker.schema, alpha=0.7)
    for f in files[1:]:
        img = M.load_image(f)
        pts = M.read_points(f.with_suffix(".pts"))
        out = live.apply(img, [pts])
        assert out.shape == img.shape and not np.array_equal(out, img)


