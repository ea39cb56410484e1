"""Run the ``osv`` command line as ``python -m osv``."""

from osv.cli import main

raise SystemExit(main())
