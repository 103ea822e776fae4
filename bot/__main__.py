"""`python -m bot` serves every configured chat platform; `python -m bot console` is the terminal adapter.

The composition root: the one module under `bot/` allowed to reach the adapters.
"""

import sys

from service.cli import main

sys.exit(main(sys.argv[1:]))
