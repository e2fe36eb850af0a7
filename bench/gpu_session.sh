#!/usr/bin/env bash
# Issue 11's measurements on the GPU machine, in as few calls as its 30 minutes allow.
#
# That machine has torch, numpy, OpenCV, pyarrow, pytest, typer and PyYAML, but not pydantic
# (nor prefect, mlflow, dvc, which nothing here needs). Before the call, on this machine:
#     make gpu-wheels                  # pydantic and its needs into .whl/ (git-ignored)
#     make gpu-data                    # the dev faces tar into .gpu/ (git-ignored), for `e2e`
# then run, carrying .whl (and .gpu for e2e), one part or several per call (each under 10 min):
#     bash bench/gpu_session.sh tests throughput colorize     # ~6 min
#     bash bench/gpu_session.sh e2e                           # ~8 min: real faces, real-gpu profile
#     bash bench/gpu_session.sh profile                       # torch.profiler trace of the 512 px step
# Logs go to $OUT (the device tool brings them back), else to ./gpu-out.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
python3 -c "import pydantic, torch; assert torch.cuda.is_available(), 'no CUDA'" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >>"$OUT/gpu.txt"

part() { # one part; pipefail makes a pipeline fail when the Python in it fails
    case $1 in
    tests) # the CUDA-marked tests (they skip elsewhere)
        python3 -m pytest -m cuda tests/integration/test_cuda.py -p no:cacheprovider -v 2>&1 | tee "$OUT/cuda-tests.log" ;;
    throughput) # c-GAN training at 256 and 512 px through the real data path
        python3 bench/train_throughput.py --device cuda 2>&1 | tee "$OUT/train-throughput.log" ;;
    colorize) # batch 1 and batched at 512 px: the product path and the network alone
        python3 bench/colorize.py --devices cuda --sizes 512 --batch 64 --repeat 5 2>&1 | tee "$OUT/colorize.log" ;;
    profile) # where a 512 px training step's time goes (Chrome trace + the top kernels)
        python3 bench/train_throughput.py --device cuda --sizes 512 --steps 10 \
            --profile-to "$OUT/trace.json" 2>&1 | tee "$OUT/profile.log" &&
            gzip -f "$OUT"/trace-*.json ;; # files come back under 16 MiB each
    e2e) # the pipeline's stages on the real dev faces at 128 px (profiles/real-gpu.yaml), timed
        rm -rf /tmp/faces && mkdir -p /tmp/faces && tar -xf .gpu/anime-faces-dev.tar -C /tmp/faces &&
            python3 bench/quality.py /tmp/faces --profile profiles/real-gpu.yaml --work /tmp/e2e \
                --json "$OUT/evaluation.json" 2>&1 | tee "$OUT/e2e.log" ;;
    *)
        echo "unknown part $1 (tests, throughput, colorize, profile, e2e)" >&2
        return 2
        ;;
    esac
}

status=0
for name in "$@"; do
    part "$name"
    rc=$?
    echo "== $name: exit $rc" | tee -a "$OUT/parts.txt"
    [ "$rc" -ne 0 ] && status=$rc
done
exit $status
