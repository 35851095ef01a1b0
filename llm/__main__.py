"""python -m llm: see llm.cli."""

import sys

from llm.cli import main

sys.exit(main())
