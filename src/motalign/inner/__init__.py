"""The inner level of MOT over many layer pairs: settings (:mod:`.options`), the backend
contract (:mod:`.types`), the dispatcher (:mod:`.dispatch`), the CPU backend (:mod:`.cpu`),
the torch backend (:mod:`.torch_backend`), and MOT+R for one pair in NumPy
(:mod:`.rotation`) beside its batched torch twin (:mod:`.rotation_torch`)."""

from .dispatch import align_pairs, inner_alignment
from .options import SETTINGS, alternation, engine_options, engine_settings
from .types import Alternation, EngineOptions, InnerAlignment, PairResult

__all__ = ["inner_alignment", "align_pairs", "engine_options", "engine_settings", "alternation", "SETTINGS",
           "Alternation", "EngineOptions", "InnerAlignment", "PairResult"]
