"""python3 -I -S -m fim.runtime.casefold SOURCE MOUNTPOINT"""

import sys

from fim.runtime.casefold.server import main

sys.exit(main(sys.argv[1:]))
