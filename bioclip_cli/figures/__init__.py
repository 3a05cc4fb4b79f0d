"""Figure engines: arrays and records in, a matplotlib Figure out (no files read, no display).

One module per figure (:mod:`.embedding_map`, :mod:`.retrieval_grid`, :mod:`.curves`, :mod:`.accuracy`);
:mod:`.style` holds the sizes, fonts, palette and the one function that saves a figure.
"""
