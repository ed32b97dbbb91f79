import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned worker (a parallel search trial) imports it
    sys.exit(main())
