import sys

from neurocards.cli import main

sys.exit(main())
