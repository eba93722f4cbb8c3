#!/usr/bin/env bash
# One device session: gpu_check.py (the recorded GPU check), then gpu_first_hour.py's sections.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
{ date -u; nvidia-smi; python3 -c "import torch, torchvision, torch_fidelity; print(torch.__version__, torch.version.cuda, torchvision.__version__, torch_fidelity.__version__, torch.cuda.get_device_name())"; nproc; lscpu | grep -E 'Model name|Flags' | cut -c1-200; } 2>&1 | tee $OUT/env.txt
echo "=== gpu_check.py (defaults)"; t0=$(date +%s)
timeout 200 python3 scripts/gpu_check.py --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.txt
echo "gpu_check rc=${PIPESTATUS[0]} wall=$(( $(date +%s) - t0 ))s" | tee -a $OUT/gpu_check.txt
echo "=== gpu_first_hour.py"; t0=$(date +%s)
timeout 250 python3 scripts/gpu_first_hour.py --sections env,train,sample,resume,ddp,project,fid,loader --json $OUT/first_hour.json 2>&1 | tee $OUT/first_hour.txt
echo "first_hour rc=${PIPESTATUS[0]} wall=$(( $(date +%s) - t0 ))s" | tee -a $OUT/first_hour.txt
