"""`python -m vision_tokenizers ...` is the `vtok` command."""

import sys

from vision_tokenizers.cli import main

if __name__ == "__main__":
    sys.exit(main())
