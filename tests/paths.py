"""Paths the tests share."""

import os

# The checkout: tools/, tflite/ and the shared data folder beside it (../shared) are found from here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
