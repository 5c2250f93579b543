"""``python -m wav2vec2 ...`` is the ``wav2vec2`` command (torchrun runs modules this way)."""
import sys

from .cli import main

sys.exit(main())
