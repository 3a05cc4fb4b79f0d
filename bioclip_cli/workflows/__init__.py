"""Workflows: one function per user-level operation (build-hdf5, inspect, download, train, embed, evaluate,
predict), each callable from a notebook with plain arguments or a RunConfig; the CLI only parses and prints.

A workflow finds its inputs, calls the engines of the lower layers (data, models, retrieval, runs) and writes
its outputs; it never imports another workflow. Composing workflows is the job of :mod:`bioclip_cli.pipelines`.
"""
