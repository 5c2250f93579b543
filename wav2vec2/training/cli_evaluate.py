"""``wav2vec2 evaluate --model DIR --data DATA``: WER and CER (CTC) or accuracy, as one JSON line on stdout."""
from .cli import add_evaluate_arguments as add_arguments  # noqa: F401
from .cli import run_evaluate as run  # noqa: F401
