import sys

from ltpa.cli import main

sys.exit(main())
