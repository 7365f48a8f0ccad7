"""``python -m maestro_gateway`` is the ``maestro`` command."""

import sys

from maestro_gateway.cli import main

sys.exit(main())
