"""``python -m aiflow_notebook.cli ...``: the ``aiflow`` command without its console script."""

import sys

from aiflow_notebook.cli import main

sys.exit(main())
