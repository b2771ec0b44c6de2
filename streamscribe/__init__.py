"""streamscribe: self-hosted real-time speech-to-text with cloud-compatible wire protocols."""

__version__ = "0.1.0"
