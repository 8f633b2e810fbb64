"""python -m launch.tpu: see launch/tpu/__init__.py."""
import sys

from launch.tpu import main

sys.exit(main())
