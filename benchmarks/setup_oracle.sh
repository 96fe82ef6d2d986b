#!/usr/bin/env bash
# Create the oracle environment: STScI's jwst 3.0 in its own virtual environment (.oracle/ at the
# repository root, or $WEBBFLOW_ORACLE), never mixed with webbflow's own dependencies.
# Parity tests (pytest -m parity) and benchmarks find it there; /work/shared/oracle/jwst_offline.py
# (../shared/oracle beside the clone) runs jwst pipelines offline with explicit reference files.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
oracle="${WEBBFLOW_ORACLE:-$repo/.oracle}"
python="${PYTHON:-python3}"
if [ -x "$oracle/bin/python" ] && "$oracle/bin/python" -c "import jwst; assert jwst.__version__.startswith('3.0')" 2>/dev/null; then
    echo "oracle: $("$oracle/bin/python" -c 'import jwst; print("jwst", jwst.__version__)') already in $oracle"
    exit 0
fi
echo "oracle: creating $oracle with jwst==3.0.0 (a few minutes)"
"$python" -m venv "$oracle"
"$oracle/bin/python" -m pip install --quiet --upgrade pip
"$oracle/bin/python" -m pip install --quiet 'jwst==3.0.0'
# stcal 1.20's snowball flagging (jump expand_large_events) draws with scikit-image, a stcal dependency
# (not OpenCV, which older stcal used): checked here so that the snowball parity test compares like with like
"$oracle/bin/python" -c 'import jwst, stcal, skimage; print("oracle: jwst", jwst.__version__, "stcal", stcal.__version__, "scikit-image", skimage.__version__)'
