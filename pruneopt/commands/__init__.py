"""Sub-commands of the ``pruneopt`` CLI; each module defines ``register(subparsers)``."""
