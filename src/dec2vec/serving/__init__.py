"""Serving: an OpenAI-compatible HTTP server for an encoder (and its generation) and an index."""

from dec2vec.serving.app import SHUTDOWN_GRACE_S, create_app
from dec2vec.serving.state import ServerSettings

__all__ = ["SHUTDOWN_GRACE_S", "ServerSettings", "create_app"]
