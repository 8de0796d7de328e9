"""The audit trail: a hash-chained JSON-lines log (chain.py, pure) and its writer (log.py).

Nothing is imported here, so that importing the pure chain module stays free of I/O.
"""
