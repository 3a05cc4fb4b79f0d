"""The data layer: the BIOSCAN HDF5 layout (read and write), the BarcodeBERT k-mer tokenizer, taxonomy
text, image decoding and transforms, torch Datasets, the raw-release builder and the bundled sample.

Import from the modules (`bioclip_cli.data.hdf5`, `.dna`, `.images`, ...); this package imports
nothing heavy itself.
"""
