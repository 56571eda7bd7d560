"""Test-only pytest plugin: a child `pytest bench` run as if vtok-bench[text] were not installed.

Load it with ``-p tests.no_ocr_plugin``: `import rapidocr_onnxruntime` then raises ImportError (a None entry in
sys.modules), exactly what an environment without the package sees.
"""

from __future__ import annotations

import sys

sys.modules["rapidocr_onnxruntime"] = None  # type: ignore[assignment]
