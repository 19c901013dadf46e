"""The server's route groups; ``app.create_app`` includes each router (a new endpoint group is one entry)."""

from dec2vec.serving.routes import embeddings, generation, operations, search

ROUTERS = [embeddings.router, generation.router, search.router, operations.router]
