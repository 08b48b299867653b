"""stepeval: an evaluation harness for spoken-dialogue (speech-to-speech) models."""

__version__ = "0.1.0"
