"""`python -m effitrain ...` (and `torchrun ... -m effitrain train ...`): the command line."""
import sys

from effitrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
