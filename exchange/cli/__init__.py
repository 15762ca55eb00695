"""The ``certex`` command line."""
