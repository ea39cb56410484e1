"""Run the ``osv`` command line as ``python -m osv``."""

from osv._entry import main

raise SystemExit(main())
