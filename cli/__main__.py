import sys

from vqedit.main import main

sys.exit(main())
