"""``python -m tl_ot_ablation``: the ``tl-ot-ablation`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
