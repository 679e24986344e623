"""Trunks (feature extractors), the embedder, and BatchNorm freezing."""
