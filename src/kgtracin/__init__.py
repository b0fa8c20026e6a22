"""kgtracin: exact, fast TracIn influence for PyKEEN knowledge-graph embedding models."""

from .callbacks import CheckpointCallback
from .checkpoints import Checkpoint
from .errors import KGTracinError
from .results import InfluenceResult, TopK
from .tracin import TracIn
from .triples import Labels

__all__ = ["TracIn", "Checkpoint", "CheckpointCallback", "InfluenceResult", "TopK", "Labels", "KGTracinError"]
__version__ = "0.1.0"
