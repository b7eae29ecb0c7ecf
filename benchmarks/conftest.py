import os
import sys

# The suites import their shared helper as `common`.
sys.path.insert(0, os.path.dirname(__file__))
