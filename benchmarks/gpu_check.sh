#!/usr/bin/env bash
# GPU readiness in one run (under 8 minutes on one GPU): the tests that need CUDA (pinned batches,
# non-blocking copies, fp32 and bf16 training on the GPU, two trials sharing a GPU through Ray),
# benchmarks/model_step.py on cuda in fp32, tf32 and bf16, and benchmarks/load.py with 1, 2 and 4
# trials sharing the GPU; then one table of it all.
#
#   bash benchmarks/gpu_check.sh              # logs in a temporary folder (printed), or
#   GPU_CHECK_OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Exits 3 at once, saying so, when torch sees no CUDA device; 1 when a CUDA test fails or skips.
# The img/s it prints are what `mipet-tune ablate --dry-run --throughput MODEL=IMG_S` takes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
PY=${PYTHON:-python}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: FAILED: torch sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}); this check needs a GPU and the CUDA build of torch" >&2
    exit 3
fi
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t mipet-gpu-check-XXXX)}
mkdir -p "$OUT"
echo "gpu_check: logs in $OUT" >&2
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")' > "$OUT/device.txt"

MIPET_REQUIRE_CUDA=1 timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py \
    > "$OUT/tests.txt" 2>&1
tests_rc=$?
timeout 150 "$PY" benchmarks/model_step.py --device cuda --modes fp32 tf32 bf16 \
    --models beta_vae betatcvae commutative mipet_vae mipet_betatcvae mipet_commutative \
    --datasets dsprites shapes3d --k 3 --batch 256 --steps 20 --rounds 3 \
    > "$OUT/model_step.txt" 2>&1
step_rc=$?
timeout 150 "$PY" benchmarks/load.py --gpu-share --gpu-steps 300 > "$OUT/load.txt" 2>&1
load_rc=$?

"$PY" - "$OUT" "$tests_rc" "$step_rc" "$load_rc" <<'EOF'
import re
import sys
from pathlib import Path

out, tests_rc, step_rc, load_rc = Path(sys.argv[1]), *map(int, sys.argv[2:])
rows = [("device", "", (out / "device.txt").read_text().strip())]
tests = (out / "tests.txt").read_text()
for m in re.finditer(r"^(PASSED|FAILED|ERROR|SKIPPED)\S* (?:\[\d+\] )?(\S+)", tests, re.M):
    rows.append(("test", m.group(2).split("::")[-1], m.group(1)))
summary = [l for l in tests.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
rows.append(("tests", f"exit {tests_rc}", summary[-1].strip("= ") if summary else "no summary"))
for line in (out / "model_step.txt").read_text().splitlines():
    f = line.split()
    if len(f) == 8 and f[3] in ("fp32", "tf32", "bf16"):
        rows.append(("model_step", f"{f[0]} {f[1]} K={f[2]} {f[3]}",
                     f"{float(f[4]):,.0f} img/s, {f[7]} of fp32 matmul"))
    elif line.startswith("fp32 matmul rate"):
        rows.append(("model_step", "fp32 matmul", line.split(":", 1)[1].strip()))
if step_rc:
    rows.append(("model_step", f"exit {step_rc}", "see model_step.txt"))
for line in (out / "load.txt").read_text().splitlines():
    m = re.match(r"gpu-share k=(\d+): aggregate (\d+) images/s.*?, (\d+) images/s over", line)
    if m:
        rows.append(("gpu share", f"{m.group(1)} trials on 1 GPU",
                     f"{int(m.group(2)):,} img/s summed, {int(m.group(3)):,} img/s over the wall"))
if load_rc or not any(r[0] == "gpu share" for r in rows):
    rows.append(("gpu share", f"exit {load_rc}", "see load.txt"))
w0, w1 = (max(len(r[i]) for r in rows) for i in range(2))
print(f"{'check':<{w0}}  {'case':<{w1}}  result")
for r in rows:
    print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}")
bad = tests_rc or step_rc or load_rc
print(f"\ngpu_check: {'FAILED' if bad else 'ok'} (logs in {out})")
sys.exit(1 if bad else 0)
EOF
