"""seqflow: orchestrated, versioned, distributed training for speech sequence models."""

__version__ = "0.1.0"
