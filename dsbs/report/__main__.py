"""python -m dsbs.report: see dsbs/report/__init__.py."""
import sys

from dsbs.report import main

sys.exit(main())
