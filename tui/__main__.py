"""``python -m tui USER``: the operator's console (see :mod:`tui.app`)."""

import sys

from tui.app import main

sys.exit(main(sys.argv[1:]))
