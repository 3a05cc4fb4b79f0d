"""bioscan-clip: train, export and evaluate BIOSCAN-CLIP models.

The public API is the configuration (:mod:`bioclip_cli.config`) and the workflows
(:mod:`bioclip_cli.workflows`); everything else is an implementation layer.
"""

__version__ = "0.1.0"
