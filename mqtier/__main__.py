"""``python -m mqtier`` runs the CLI."""

from mqtier.cli import main

main()
