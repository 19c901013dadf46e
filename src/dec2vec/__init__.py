"""dec2vec: turn any decoder-only LLM into a text encoder."""

import os

# Set before torch loads OpenMP: busy-waiting threads make 2-thread CPU inference slower, not faster.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dec2vec.attention import AttentionSwitchError, check_switch, hidden_states, is_bidirectional
from dec2vec.backbone import NAMED_BACKBONES, Backbone, load_backbone
from dec2vec.encoder import Encoder, EncoderConfig

__all__ = [
    "NAMED_BACKBONES",
    "AttentionSwitchError",
    "Backbone",
    "Encoder",
    "EncoderConfig",
    "check_switch",
    "hidden_states",
    "is_bidirectional",
    "load_backbone",
]
__version__ = "0.1.0"
