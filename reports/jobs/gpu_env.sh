# Source this at the start of every GPU job (device machine: Python 3.12, torch/triton preinstalled, no network).
# Installs the carried wheels (../shared/tools/gpu-stage puts them under .carry/whl; extra pure-python wheels
# under .whl) into /tmp/site and puts dartool on PYTHONPATH.
set -u
# several training processes share one host: keep each one's CPU thread pools (scipy / torch CPU ops) small
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} MKL_NUM_THREADS=${MKL_NUM_THREADS:-8}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/whl/*.whl $(ls .whl/*.whl 2>/dev/null) 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
export DARTOOL_COMMIT=${DARTOOL_COMMIT:-$(cat .commit 2>/dev/null || echo unknown)}
python3 - <<'PY'
import importlib
for m in ["torch", "triton", "numpy", "pandas", "matplotlib", "seaborn", "sklearn", "scipy", "zarr", "xarray",
          "typer", "rich", "tqdm", "PIL", "safetensors", "efficientnet_lite_pytorch"]:
    try:
        mod = importlib.import_module(m); print(f"{m:28s} {getattr(mod, '__version__', '?')}")
    except Exception as e:
        print(f"{m:28s} MISSING ({type(e).__name__}: {e})")
PY
nvidia-smi -L
