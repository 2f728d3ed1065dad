"""Analyzers: models that turn audio into per-frame label scores and embeddings.

Each analyzer is one module implementing :class:`soundscope.types.Analyzer`.
"""
