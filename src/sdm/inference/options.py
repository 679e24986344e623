"""The choices the inference commands offer, importable without torch or faiss (the CLI
builds its parser from them). Candidates for sdm.constants."""

from __future__ import annotations

# sdm index --kind (see sdm.inference.index).
FLAT, HNSW, IVF = "flat", "hnsw", "ivf"
INDEX_KINDS = (FLAT, HNSW, IVF)
# Each kind's parameters and their defaults (None: chosen from the gallery's size).
INDEX_PARAMETERS: dict[str, dict[str, int | None]] = {
    FLAT: {},
    HNSW: {"m": 16, "ef_construction": 40, "ef_search": 64},
    IVF: {"nlist": None, "nprobe": 32},
}

# sdm export --format (see sdm.inference.export).
ONNX, TORCHSCRIPT = "onnx", "torchscript"
EXPORT_FORMATS = (ONNX, TORCHSCRIPT)
