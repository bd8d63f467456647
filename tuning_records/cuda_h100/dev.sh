# usage: bash .devcarry_p2/dev.sh  (run on the device from the repo root)
set -x
export PYTHONUNBUFFERED=1
ls -la /tmp/dc/ 2>&1
cat /tmp/dc/tvmpart.00 .devcarry_p2/tvmpart.01 > /tmp/apache_tvm-0.27.0.post1-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl || exit 3
md5sum /tmp/apache_tvm-*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/apache_tvm-*.whl .devcarry_p2/whl/*.whl || exit 4
export PYTHONPATH=/tmp/site:$PWD
which nvcc; nvcc --version | tail -2; ls /usr/local/cuda*/bin/nvcc 2>/dev/null; nvidia-smi --query-gpu=name,driver_version --format=csv
set +x
