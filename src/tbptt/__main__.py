import sys

from tbptt.cli import main

sys.exit(main())
