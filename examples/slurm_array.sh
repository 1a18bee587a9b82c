#!/bin/bash
# Track every video of a folder on a Slurm cluster: one array task per shard.
#
#   mkdir -p logs && sbatch examples/slurm_array.sh            # 8 tasks: shards 0/8 .. 7/8
#   VIDEOS=/data/clips OUT=/data/fkp sbatch --array=0-31 examples/slurm_array.sh
#
# Task K runs `fkp-live --videos ... --shard K/N`: every Nth video of the sorted list from the Kth,
# so the tasks together cover every video exactly once and need nothing but fkp-live. Each task
# writes OUT/NAME.csv per video and its own manifest, OUT/manifest-K-of-N.csv (no two tasks write
# the same file, so OUT may be on a shared disk). Submitting the same array again resumes: videos
# done are skipped, failed or unfinished ones are redone. To redo some tasks only, keep N fixed:
#   SHARDS=8 sbatch --array=3,5 examples/slurm_array.sh
# A task exits 1 when one of its videos failed (the manifest says which and why), 0 otherwise.
#
#SBATCH --job-name=fkp-live
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=6G
#SBATCH --time=04:00:00
#SBATCH --output=logs/fkp-live-%A_%a.out
set -euo pipefail

VIDEOS=${VIDEOS:-$HOME/videos}               # a folder, or a quoted glob such as '/data/**/*.mp4'
OUT=${OUT:-$HOME/fkp_out}
SHARDS=${SHARDS:-$SLURM_ARRAY_TASK_COUNT}     # N: the array must run from 0 to N-1
FKP_LIVE=${FKP_LIVE:-fkp-live}                # e.g. "/opt/venvs/fkp/bin/fkp-live"

# one worker process per CPU Slurm gave the task, each with one ONNX Runtime thread
$FKP_LIVE --videos "$VIDEOS" --out-dir "$OUT" \
    --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" \
    --jobs "${SLURM_CPUS_PER_TASK:-1}" --device cpu \
    --analysis pose,eyes,mouth "$@"
