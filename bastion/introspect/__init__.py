"""Read-only views of a pod (docs/introspection.md): what an introspect-only grant gives
instead of a shell. Pure: the fixed commands, the path check, and the parsers of their output.
"""
