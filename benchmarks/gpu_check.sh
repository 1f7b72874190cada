#!/usr/bin/env bash
# One prepared check for a machine with CUDA, in under 8 minutes:
#   1. the CUDA build of the pinned torch (installed into the venv if the CPU build is there);
#   2. the `gpu`-marked tests;
#   3. rounds mined with miners on CPU, on one whole GPU, and two miners at 0.5 GPU on one card;
#   4. round_overhead.py with the cnn on CUDA (only if it has a --num-gpus flag; else recorded as skipped);
#   5. a miner training on all the machine's GPUs through Ray Train (benchmarks/data_parallel.py --gpu:
#      one worker per GPU, NCCL), its transcript replayed on CPU: the GPU-vs-CPU distance that
#      AuditParams.tolerance must cover (0 today: GPU miners' audits are not calibrated);
#   6. one JSON of figures: CUDA training speed vs the CPU run, GPU memory left allocated after each
#      round (should be 0: miners release it), the 2-miners-on-one-GPU throughput ratio, the Ray Train run.
#
#   benchmarks/gpu_check.sh                    # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --dry-run          # anywhere: checks every step without CUDA, Ray or installs
#   benchmarks/gpu_check.sh --out FILE         # where the JSON goes (default build/gpu_check.json)
#
# NOT YET RUN ON A GPU: written and dry-run on a CPU-only machine. Its first real run is its test.
# The Ray Train step (5) has run on CPU (gloo, 2 workers) only: it has never run on a GPU either.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=build/gpu_check.json
DRY=0
BUDGET_S=480
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --dry-run, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
START=$(date +%s)
WORK=$(mktemp -d /tmp/dlbc-gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")"
STEPS="$WORK/steps.jsonl"
: > "$STEPS"

say() { printf '[gpu_check %3ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
record() {  # record NAME STATUS SECONDS [DETAIL]
  "$PY" -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "status": sys.argv[2], "seconds": float(sys.argv[3]), "detail": sys.argv[4]}))' \
    "$1" "$2" "$3" "${4:-}" >> "$STEPS"
}
run_step() {  # run_step NAME TIMEOUT_S COMMAND...: never stops the script; the JSON records the outcome
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s) status=ok
  if (( $(left) < 20 )); then record "$name" skipped_budget 0 "under 20 s of the 8-minute budget left"; say "$name: skipped (budget)"; return; fi
  (( limit > $(left) )) && limit=$(left)
  say "$name (limit ${limit} s)"
  if ! timeout "$limit" "$@" > "$WORK/$name.log" 2>&1; then status=failed; fi
  tail -n 5 "$WORK/$name.log" | sed "s/^/    /"
  record "$name" "$status" "$(( $(date +%s) - t0 ))" "$(tail -n 1 "$WORK/$name.log" | cut -c1-300)"
}

# ------------------------------------------------------------------------------ 0. preconditions
[[ -x "$PY" ]] || { echo "gpu_check.sh: no python at $PY (make the venv first: see README)" >&2; exit 2; }
TORCH_PIN=$(sed -n 's/^ *"torch==\([0-9.]*\)",.*/\1/p' pyproject.toml | head -n 1)
[[ -n "$TORCH_PIN" ]] || { echo "gpu_check.sh: pyproject.toml pins no torch==X" >&2; exit 2; }
say "torch pinned at $TORCH_PIN; dry run: $DRY; figures to $OUT"

# ------------------------------------------------------------------------- 1. CUDA build of torch
torch_cuda() { "$PY" -c 'import torch; print(torch.version.cuda or "", torch.cuda.is_available())' 2>/dev/null; }
if [[ $DRY == 1 ]]; then
  say "dry run: would install torch==$TORCH_PIN (CUDA build from PyPI) if '$(torch_cuda)' shows no CUDA"
  command -v nvidia-smi > /dev/null && say "nvidia-smi present" || say "no nvidia-smi here (expected on CPU)"
else
  command -v nvidia-smi > /dev/null || { echo "gpu_check.sh: no nvidia-smi: not a CUDA machine (try --dry-run)" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/    /'
  if [[ "$(torch_cuda)" != *True ]]; then
    # PyPI's Linux x86_64 wheel of the pinned torch is the CUDA build (cluster.yaml installs it the same way).
    # PyPI named explicitly: a pip.conf pointing at the CPU wheel index would bring the CPU build back.
    run_step install_cuda_torch 300 "$PY" -m pip install --quiet --index-url https://pypi.org/simple \
      --force-reinstall --no-deps "torch==$TORCH_PIN"
    run_step install_cuda_deps 200 "$PY" -m pip install --quiet --index-url https://pypi.org/simple "torch==$TORCH_PIN"
  fi
  [[ "$(torch_cuda)" == *True ]] || { echo "gpu_check.sh: torch still sees no CUDA: $(torch_cuda)" >&2; exit 1; }
fi

# --------------------------------------------------------------------------------- 2. gpu tests
if [[ $DRY == 1 ]]; then
  run_step gpu_tests_collect 120 "$PY" -m pytest -m gpu --collect-only -q -p no:cacheprovider tests/models
else
  run_step gpu_tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
fi

# ------------------------------------------------------------------ 3. rounds on CPU, 1 GPU, 2 x 0.5 GPU
cat > "$WORK/mine.py" <<'PY'
"""Rounds of the cnn task with miners on CPU, on one whole GPU, and two at 0.5 GPU; prints one JSON line."""
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
DRY = "--dry-run" in sys.argv
ROUNDS, EPOCHS = 2, 5
SETUPS = {"cpu": (1, 0.0), "gpu_whole": (1, 1.0), "gpu_half_x2": (2, 0.5)}  # name -> (miners, num_gpus each)


def mine(miners: int, num_gpus: float) -> dict:
    import ray

    from dlbc_ray.actors._ray import get
    from dlbc_ray.actors.coordinator import TaskData, now_ms
    from dlbc_ray.config import DEFAULT, MinerConfig, TaskDefaults
    from dlbc_ray.runtime.home import open_home
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.runtime.network import assemble, load_identities, make_task, run_round, start_local_ray, teardown

    cfg = DEFAULT.model_copy(update={"miners": miners, "validators": 4,
                                     "miner": MinerConfig(num_cpus=2, num_gpus=num_gpus),
                                     "task": TaskDefaults(model="cnn", epochs=EPOCHS, target=0.1)})
    home = open_home(tempfile.mkdtemp(prefix="dlbc-gpu-home-"))
    start_local_ray(home, cfg)
    rows = []
    try:
        net = assemble(cfg, home, load_identities(home, cfg))
        devices = [get(m.handle.info.remote(), timeout=60, what="miner info")["device"] for m in net.miners]
        bundle = load_builtin("digits", cache_dir=home.datasets)
        data = TaskData(train=ray.put(bundle.train), test=ray.put(bundle.test))
        for i in range(ROUNDS + 1):  # round 0 warms CUDA and caches
            task = make_task(net.identities.requester, cfg.task, bundle, nonce=time.time_ns(), created_ms=now_ms(),
                             chain_id=net.chain_id)
            report = run_round(net, task, data, timeout_s=600)
            memory = [get(m.handle.gpu_memory.remote(), timeout=60, what="gpu memory") for m in net.miners]
            if i:
                rows.append({"committed": report.committed, "train_s": report.timings.get("train_s", 0.0),
                             "round_s": report.round_seconds, "gpu_bytes_after": memory})
        teardown(net)
    finally:
        ray.shutdown()
    train_s = sorted(r["train_s"] for r in rows)[len(rows) // 2]
    samples = miners * len(bundle.train) * EPOCHS
    return {"miners": miners, "num_gpus": num_gpus, "devices": devices, "rounds": rows, "train_s": train_s,
            "samples_per_s": samples / train_s if train_s else 0.0}


def main() -> None:
    if DRY:  # everything but Ray and CUDA: imports, config, the registry cnn on digits
        from dlbc_ray.config import DEFAULT, MinerConfig, TaskDefaults
        from dlbc_ray.models.data import load_builtin
        from dlbc_ray.models.nets import build_net

        for name, (miners, gpus) in SETUPS.items():
            DEFAULT.model_copy(update={"miners": miners, "miner": MinerConfig(num_cpus=2, num_gpus=gpus),
                                       "task": TaskDefaults(model="cnn", epochs=EPOCHS)})
        bundle = load_builtin("digits")
        build_net("cnn", {}, bundle.input_shape, bundle.n_classes)
        print(json.dumps({"dry_run": True, "setups": list(SETUPS)}))
        return
    figures = {name: mine(*setup) for name, setup in SETUPS.items()}
    cpu, whole, half = figures["cpu"], figures["gpu_whole"], figures["gpu_half_x2"]
    figures["cuda_speedup_vs_cpu"] = cpu["train_s"] / whole["train_s"] if whole["train_s"] else None
    figures["two_on_one_gpu_throughput_ratio"] = (half["samples_per_s"] / whole["samples_per_s"]
                                                  if whole["samples_per_s"] else None)
    figures["gpu_bytes_left_after_rounds"] = max(b for s in (whole, half) for r in s["rounds"]
                                                 for b in r["gpu_bytes_after"])
    print(json.dumps(figures))


main()
PY
if [[ $DRY == 1 ]]; then
  run_step mine_rounds_dry 120 "$PY" "$WORK/mine.py" --dry-run
else
  run_step mine_rounds 330 "$PY" "$WORK/mine.py"
fi

# ------------------------------------------------------------------ 4. round_overhead with the cnn on CUDA
if "$PY" benchmarks/round_overhead.py --help 2>/dev/null | grep -q -- "--num-gpus"; then
  if [[ $DRY == 1 ]]; then
    record round_overhead_cuda dry_ok 0 "round_overhead.py has --num-gpus"
  else
    run_step round_overhead_cuda 200 "$PY" benchmarks/round_overhead.py --task long --quick --num-gpus 1 --json
  fi
else
  record round_overhead_cuda skipped 0 "round_overhead.py has no --num-gpus flag yet (asked of its owner)"
  say "round_overhead_cuda: skipped (round_overhead.py has no --num-gpus flag yet)"
fi

# ------------------------------------------------- 5. a miner on all the GPUs through Ray Train (NCCL)
if [[ $DRY == 1 ]]; then
  run_step data_parallel_dry 120 "$PY" -c 'import ray.train.lightning, ray.train.torch, dlbc_ray.actors.data_parallel, dlbc_ray.models.distributed; print("{\"ray_train\": \"importable\"}")'
else
  GPUS=$(nvidia-smi --list-gpus | wc -l)
  run_step data_parallel_cuda 240 "$PY" benchmarks/data_parallel.py --gpu --workers "$GPUS" --runs 1 --epochs 3 --json
fi

# --------------------------------------------------------------------------------------- 6. JSON
"$PY" - "$STEPS" "$WORK" "$OUT" "$DRY" "$(( $(date +%s) - START ))" <<'PY'
import json
import pathlib
import subprocess
import sys

steps_file, work, out, dry, seconds = sys.argv[1:6]
steps = [json.loads(line) for line in pathlib.Path(steps_file).read_text().splitlines() if line.strip()]
figures = {"dry_run": dry == "1", "seconds": int(seconds), "budget_s": 480, "steps": steps}
for name in ("mine_rounds", "mine_rounds_dry", "round_overhead_cuda", "data_parallel_cuda", "data_parallel_dry"):
    log = pathlib.Path(work, f"{name}.log")
    lines = [l for l in log.read_text().splitlines() if l.startswith("{")] if log.exists() else []
    if lines:
        figures[name] = json.loads(lines[-1])
try:
    figures["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    figures["gpu"] = None
pathlib.Path(out).write_text(json.dumps(figures, indent=1))
failed = [s["step"] for s in steps if s["status"] == "failed"]
print(f"wrote {out}; {len(steps)} steps, failed: {failed or 'none'}; {seconds} s of the 480 s budget")
sys.exit(1 if failed else 0)
PY
