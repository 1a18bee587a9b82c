#!/usr/bin/env bash
# Make every picture of the manual in docs/images/, from the repository root:
#
#   bash scripts/make_pictures.sh [PYTHON]
#
# overlay.gif, pose.png                 scripts/overlay_images.py (the demo; pose.png needs ../shared/data)
# morph_strip.png, morph_anim.gif, morph_mean.png, morph_caricature.png, morph_live.png
#                                       scripts/morph_images.py (needs scikit-image for its second face)
# ced_300w_test.png                     fkp-train eval-runtime on the 300-W test split (needs ../shared/data
#                                       and, for dlib's curve, pip install dlib-bin face_recognition_models)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" scripts/overlay_images.py --out docs/images
if "$PY" -c "import skimage" 2>/dev/null; then
    "$PY" scripts/morph_images.py --out docs/images
else
    echo "scikit-image is not installed (pip install scikit-image): the morph pictures are left as they are"
fi
DLIB=$("$PY" -c "import os, face_recognition_models as f; print(os.path.join(os.path.dirname(f.__file__), 'models', 'shape_predictor_68_face_landmarks.dat'))" 2>/dev/null || true)
"$PY" -c "import sys; sys.argv[0] = 'fkp-train'; from train.cli import main; main()" eval-runtime fast accurate \
    --data ../shared/data/300w --ced docs/images/ced_300w_test.png ${DLIB:+--dlib-model "$DLIB"}
