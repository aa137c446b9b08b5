"""`python -m polylm.cli` = the `polylm` command."""

import sys

from polylm.cli import main

sys.exit(main())
