"""``python -m dec2vec`` runs the command line."""

from dec2vec.cli import main

main()
