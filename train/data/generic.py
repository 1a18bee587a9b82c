"""A generic keypoint CSV, so users can bring their own data.

Format: a header ``image,x_0,y_0,x_1,y_1,...,x_{N-1},y_{N-1}``, then one row per image::

    image,x_0,y_0,x_1,y_1
    faces/a.jpg,10.5,20,30,40.25
    faces/b.png,12,22,,

* ``image`` is a path relative to the CSV's folder (an absolute path is used as it is).
* coordinates are pixels in that image, 0-based, pixel centres (the centre of the top-left pixel
  is (0, 0)), the convention of every reader here.
* an empty pair of cells (or ``nan``) means the point is not labelled: it comes back masked
  (NaN and ``mask`` False); the row is kept.

Point i is point i of the keypoint schema: pass ``schema_name`` (one of `fkp_live.schemas.SCHEMAS`),
or leave it None to pick the one schema with that many points (68 -> ibug68, 15 -> kaggle15, ...).

Errors name the file and the line (1-based, the header being line 1): an unreadable image, a wrong
number of columns, a non-number, a coordinate without its partner. With ``skip_bad=True`` bad rows
are skipped and listed in the `SkipReport`; a bad header always raises.
"""
from __future__ import annotations

from pathlib import Path

from fkp_live.schemas import SCHEMAS

from . import DataError, Sample, SkipReport, SkippableError
from .ibug import read_image
from .kaggle import _RowError, _short, points_from_cells, read_header


def header_for(n_points: int) -> list[str]:
    """The header of a generic CSV with `n_points` points."""
    return ["image"] + [f"{a}_{i}" for i in range(n_points) for a in ("x", "y")]


def _schema_for(path: Path, n: int, schema_name: str | None) -> str:
    if schema_name is not None:
        schema = SCHEMAS.get(schema_name)
        if schema is None:
            raise DataError(
                f"{path}: unknown keypoint schema {schema_name!r}; known: {', '.join(sorted(SCHEMAS))}"
            )
        if schema.n != n:
            raise DataError(
                f"{path}:1: the header has {n} points but schema {schema_name!r} has {schema.n}; "
                "fix the header or choose the right schema"
            )
        return schema.name
    fits = [s.name for s in SCHEMAS.values() if s.n == n]
    if len(fits) != 1:
        known = ", ".join(f"{s.name} ({s.n})" for s in SCHEMAS.values())
        raise DataError(
            f"{path}:1: cannot tell the keypoint schema of {n} points"
            f"{' (' + ' or '.join(fits) + ')' if fits else ''}; pass the schema name. Known: {known}"
        )
    return fits[0]


def _check_header(path: Path, fields: list[str] | None) -> int:
    """Validate the header; returns the number of points."""
    example = "image,x_0,y_0,x_1,y_1,..."
    if fields is None:
        raise DataError(f"{path}: empty file; expected a header {example}")
    got = [f.strip() for f in fields]
    if not got or got[0].lower() != "image":
        raise DataError(
            f"{path}:1: the first header column must be 'image', got {_short(got[0] if got else '')!r}; "
            f"the header must be {example}"
        )
    coords = len(got) - 1
    if coords == 0 or coords % 2:
        raise DataError(
            f"{path}:1: the header has {coords} coordinate columns; it needs an x and a y per point: "
            f"{example}"
        )
    want = header_for(coords // 2)
    for i, (a, b) in enumerate(zip(got, want)):
        if a.lower() != b:
            raise DataError(
                f"{path}:1: header column {i + 1} is {_short(a)!r} where {b!r} was expected; "
                f"the header must be {example}"
            )
    return coords // 2


def read_csv(
    path: str | Path,
    schema_name: str | None = None,
    grey: bool = False,
    skip_bad: bool = False,
) -> tuple[list[Sample], SkipReport]:
    """Read a generic keypoint CSV -> (samples, SkipReport).

    Each `Sample` holds the image (BGR, or greyscale with ``grey=True``), the (N, 2) float32
    points with NaN where unlabelled, the mask, source ``"<csv>:<line>"`` and the schema name.
    """
    path, header, rows = read_header(path)
    n = _check_header(path, header)
    schema = _schema_for(path, n, schema_name)
    names = header_for(n)
    base = path.parent
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for line, fields in rows:
        try:
            if len(fields) != len(names):
                raise _RowError(
                    f"expected {len(names)} columns (image and {2 * n} coordinates), got {len(fields)}"
                )
            name = fields[0].strip()
            if not name:
                raise _RowError("the image column is empty")
            pts, mask = points_from_cells(fields[1:], names[1:])
            img_path = base / name  # an absolute name stays absolute
            if not img_path.is_file():
                raise _RowError(f"image {str(img_path)!r} not found (paths are relative to the CSV's folder)")
            try:
                img = read_image(img_path, grey)
            except DataError:
                raise _RowError(f"image {str(img_path)!r} is unreadable (corrupt or not an image)") from None
        except _RowError as e:
            if not skip_bad:
                raise SkippableError(f"{path}:{line}: {e}; fix or delete the row", "rows") from None
            skipped.append((f"{path}:{line}", str(e)))
            continue
        samples.append(Sample(img, pts, mask, f"{path}:{line}", schema))
    return samples, SkipReport(skipped)
