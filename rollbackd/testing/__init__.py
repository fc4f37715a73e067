"""Fakes and real-binary harnesses shipped with rollbackd for its tests and its demo."""
