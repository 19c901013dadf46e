"""Serving: an OpenAI-compatible HTTP server for an encoder (and its generation) and an index."""

from dec2vec.serving.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
