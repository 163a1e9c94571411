"""Run the seqflow pipeline flow: ``python flows/pipeline.py [hydra overrides...]``.

Same as ``seqflow pipeline``; the flow itself lives in :mod:`seqflow.flow` so the installed
console script and Prefect deployments import it without path tricks.
"""

import sys

from seqflow.cli import _setup_logging
from seqflow.flow import run_pipeline

if __name__ == "__main__":
    _setup_logging()
    run_pipeline(sys.argv[1:])
