"""Workflows: one function per user-level operation (build-hdf5, inspect, train, embed, evaluate), each
callable from a notebook with plain arguments or a RunConfig; the CLI only parses and prints."""
