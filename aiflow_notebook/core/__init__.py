"""The floor every layer stands on: shared words, errors, settings, and small helpers of the operating
system (private files, process groups, free ports, waiting). It imports nothing of ours.
"""
