"""``python -m memwatch``: the memwatch command."""
import sys

from memwatch.cli import main

sys.exit(main())
