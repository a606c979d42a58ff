"""Runs a folder's Python unittest suite and writes its counts as a JSON report in the shape
.ci/count.mjs reads: python3 .ci/unittest-report.py FOLDER REPORT.json (exit 1 on any failure)."""

import json
import sys
import unittest

folder, report = sys.argv[1], sys.argv[2]
suite = unittest.defaultTestLoader.discover(folder, pattern="test_*.py", top_level_dir=folder)
result = unittest.TextTestRunner(verbosity=2).run(suite)
failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
skipped = len(result.skipped)
passed = result.testsRun - failed - skipped
with open(report, "w") as f:
    json.dump({"numPassedTests": passed, "numFailedTests": failed, "numPendingTests": skipped, "success": failed == 0 and result.testsRun > 0}, f)
sys.exit(0 if failed == 0 and result.testsRun > 0 else 1)
