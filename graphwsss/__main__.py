import sys

from graphwsss.cli import main

sys.exit(main())
