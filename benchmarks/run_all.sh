#!/usr/bin/env bash
# Reproduce benchmarks/RESULTS.md: jaxem and the peers on the same data, same starts,
# fixed iterations. Needs the peer virtualenv (see benchmarks/README.md) with jaxem
# installed into it (pip install -e .). Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
run() { name=$1; shift; "$PY" -m "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log"; }

# Gaussian mixture, full covariance: N=100k D=16 K=16. jaxem at the target size
# (32 restarts x 100 iterations); every library at 2 restarts x 10 iterations.
run gmm_full_jaxem benchmarks.peers_gmm --preset full-full --peers jaxem --ceiling --repeats 3
run gmm_full_peers benchmarks.peers_gmm --preset medium-full --ceiling --repeats 3 \
    --peers jaxem,sklearn,gmmx-vmap,pomegranate,torchgmm
# Diagonal covariance: N=1M D=32 K=64; 8 restarts for jaxem, 1 for the peers (per-restart-
# iteration rates compared); pomegranate takes ~64 s per iteration here and is left out.
run gmm_diag_jaxem benchmarks.peers_gmm --preset full-diag --iters 10 --peers jaxem --ceiling
run gmm_diag_peers benchmarks.peers_gmm --preset medium-diag --iters 3 --ceiling \
    --peers jaxem,sklearn,gmmx,torchgmm
# k-means (Lloyd): N=1M D=32 K=64, 8 restarts, 10 iterations.
run kmeans benchmarks.peers_kmeans --preset full --iters 10 --ceiling \
    --peers jaxem,sklearn,torchgmm
# k-means quality at equal wall time (jaxem n_init=8 vs scikit-learn n_init=10).
"$PY" -m benchmarks.kmeans_equal_time --restarts 8 | tee "$OUT/kmeans_equal_time.log"
# HMM, diagonal Gaussian emissions, D=8 K=16, 20 iterations, 1 restart.
run hmm_long benchmarks.peers_hmm --preset medium-long --iters 20 --repeats 3 --ceiling \
    --peers jaxem,jaxem-scan,jaxem-blocked,hmmlearn,hmmlearn-log,dynamax
run hmm_many benchmarks.peers_hmm --preset medium-many --iters 20 --repeats 3 --ceiling \
    --peers jaxem,jaxem-scan,jaxem-blocked,hmmlearn,hmmlearn-log,dynamax
# 32 restarts of the 100-sequence case (compare with the 1-restart row above).
run hmm_many_32 benchmarks.peers_hmm --preset medium-many --iters 20 --restarts 32 \
    --peers jaxem,jaxem-blocked
# Time to first answer in fresh processes (cache off / cold / warm), side by side with
# scikit-learn and hmmlearn; and the peak memory of initialisation against the EM loop.
"$PY" benchmarks/startup.py --repeat 3 --json "$OUT/startup.json" | tee "$OUT/startup.log"
"$PY" benchmarks/init_memory.py --json "$OUT/init_memory.json" | tee "$OUT/init_memory.log"
