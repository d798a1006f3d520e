"""The GPU check, from a checkout: `python bench/gpu_check.py OUT [--smoke]`.

Same as `python -m cft.gpu_check` (the code lives in the package so that an offline install from
launch/offline_bundle.py carries it); see cft/gpu_check.py and the README's "Checking a GPU node".
"""
import sys

from cft.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
