import sys

from condu_bench.cli import main

sys.exit(main())
