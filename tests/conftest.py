import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tools/ and tflite/ are script folders, not installed packages: make them importable for the tests.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
