"""Pipelines: several workflows in sequence, the one layer that may compose them.

A workflow finds its inputs, calls the engines of the lower layers and writes its outputs; it never imports
another workflow. A pipeline is the exception made explicit: :mod:`.demo` runs build-hdf5, embed, train and
evaluate one after the other on the bundled sample, exactly as a user would by hand, through the same
workflow functions. The command line calls a pipeline as it calls a workflow.
"""
