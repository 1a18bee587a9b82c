"""Face morphing on the 68 iBUG points: offline morphs, mean faces, caricatures, and a live morph.

One piecewise-affine warp serves every use. A face's 68 points get 6 forehead points (above the
brows, so the forehead moves with the face) and, for whole pictures, 8 boundary points (corners
and edge midpoints). The mesh is triangulated ONCE (Delaunay on the mean shape, with the inner lips
held apart so an opening mouth never folds a triangle) and kept as index triples, so the same
triangles are used for every shape. A warp rasterises the destination triangles' ids into an index
map over the region it fills (`cv2.fillConvexPoly`), turns each pixel's triangle into affine
coefficients (one table look-up), and samples the source with a single `cv2.remap`: no Python loop
over pixels or per-triangle full-frame warps.

    >>> import numpy as np
    >>> img = np.zeros((64, 64, 3), np.uint8)
    >>> shape = np.array([[8., 8.], [56., 8.], [32., 56.], [0., 0.], [63., 0.], [63., 63.], [0., 63.]])
    >>> tris = delaunay(shape)
    >>> warp(img, shape, shape, tris).shape
    (64, 64, 3)

The rooms: `mesh` (the points added, the triangulation, similarities), `warping` (the remap),
`points` (pictures, points files, mean shapes, faces found by the tracker), `offline` (`Morph`, a
sequence A -> B -> C ... or one picture at `warp_frac` / `dissolve_frac`; `caricature()`;
`average()`) and `live` (`LiveMorph(target, points, schema, alpha)`, an engine overlay,
`overlay(frame, faces) -> Frame`; `benchmark()` / `python -m fkp_live.render.morph --bench VIDEO
TARGET` measures it through `engine.run` with an MP4 written). Every public name is here too.
"""
from .live import LiveMorph, benchmark, colour_matrix
from .mesh import (BROWS, EYE_CORNERS, FOREHEAD_FROM, FOREHEAD_HEIGHT, FOREHEAD_LIFT, FOREHEAD_OUT, INNER_MOUTH, JAW,
                   N_BOUNDARY, N_FACE, N_FOREHEAD, N_POINTS, apply_affine, boundary_points, delaunay, face_shape,
                   forehead_points, invert_affine, picture_shape, signed_areas, similarity, triangulation_shape)
from .offline import (INNER_LIP_PAIRS, Average, Morph, Subject, average, caricature, cover_transform, keep_lip_gap,
                      mean_eye_corners)
from .points import (IMAGE_SUFFIXES, MorphError, check_points, face_points, find_faces, load_image, load_mean,
                     read_csv_points, read_points, read_pts, save_mean)
from .warping import fold_fraction, triangle_ids, warp, warp_maps

__all__ = ["LiveMorph", "benchmark", "colour_matrix", "BROWS", "EYE_CORNERS", "FOREHEAD_FROM", "FOREHEAD_HEIGHT",
           "FOREHEAD_LIFT", "FOREHEAD_OUT", "INNER_MOUTH", "JAW", "N_BOUNDARY", "N_FACE", "N_FOREHEAD", "N_POINTS",
           "apply_affine", "boundary_points", "delaunay", "face_shape", "forehead_points", "invert_affine",
           "picture_shape", "signed_areas", "similarity", "triangulation_shape", "INNER_LIP_PAIRS", "Average", "Morph",
           "Subject", "average", "caricature", "cover_transform", "keep_lip_gap", "mean_eye_corners", "IMAGE_SUFFIXES",
           "MorphError", "check_points", "face_points", "find_faces", "load_image", "load_mean", "read_csv_points",
           "read_points", "read_pts", "save_mean", "fold_fraction", "triangle_ids", "warp", "warp_maps"]
