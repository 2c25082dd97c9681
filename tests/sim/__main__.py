"""``python -m tests.sim``: replay one schedule or soak many (see ``tests.sim.soak``)."""

import os
import sys

from tests.sim.soak import main

try:
    sys.exit(main())
except BrokenPipeError:  # the trace was piped into head or less and the reader left
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
