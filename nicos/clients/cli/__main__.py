"""``python -m nicos.clients.cli``: same as the ``nicos-client`` command."""

import sys

from nicos.clients.cli.main import main

sys.exit(main())
