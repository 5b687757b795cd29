"""Hyper-parameter search over the method's knobs with Optuna (``pulmoseg tune``)."""

from training.tuning.objective import lesion_score
from training.tuning.search import SearchRequest, SearchResult, run_search
from training.tuning.space import Knob, PrunerKind, TuneConfig, load_tune_file
from training.tuning.storage import default_storage_url, open_storage

__all__ = [
    "Knob",
    "PrunerKind",
    "SearchRequest",
    "SearchResult",
    "TuneConfig",
    "default_storage_url",
    "lesion_score",
    "load_tune_file",
    "open_storage",
    "run_search",
]
