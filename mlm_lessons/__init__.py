"""Build MusicLM: the reference package the course notebooks build and import."""
__version__ = "0.1.0"
