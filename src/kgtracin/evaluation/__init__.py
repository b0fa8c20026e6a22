"""Measuring explanation quality: deletion-and-retrain faithfulness and noisy-fact detection.

``kgtracin evaluate`` composes :mod:`.retrain` (isolated or reshuffled retraining), :mod:`.deletion`
(targets, arms, PD / TC), :mod:`.noisy` (corruption, ROC AUC) and :mod:`.outputs`.
"""

from .deletion import TracInArm
from .protocol import DEFAULT_ARMS, EvaluationConfig, run_deletion, run_noisy
from .retrain import RetrainConfig, Retrainer

__all__ = ["EvaluationConfig", "RetrainConfig", "Retrainer", "TracInArm", "DEFAULT_ARMS", "run_deletion", "run_noisy"]
