import sys

from speechllm.cli import main

sys.exit(main())
