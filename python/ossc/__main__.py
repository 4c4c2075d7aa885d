import sys

from ossc.cli import main

sys.exit(main())
