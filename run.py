"""The paper's entry point: ``python run.py --reproduce_results exp_configs/cub_ms ...``.

Accepts the commands of the paper's README as they are and runs them with this project's
``sdm`` command (see ``sdm.paper_commands`` for the translation).
"""

import sys

from sdm.paper_commands import main

if __name__ == "__main__":
    sys.exit(main())
