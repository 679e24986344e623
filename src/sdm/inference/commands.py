"""The inference commands: ``sdm embed``, ``sdm index``, ``sdm search`` and ``sdm export``.

Each subcommand's ``func`` takes the parsed arguments and returns the exit code: 0 on success,
2 with ``sdm <command>: error: <what was wrong and what to do>`` on stderr when the experiment,
the images, the gallery or its index do not fit the request.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from sdm.inference.options import EXPORT_FORMATS, FLAT, HNSW, INDEX_KINDS, INDEX_PARAMETERS, IVF

ERROR_EXIT_CODE = 2
IMAGES_HELP = ("image files, a folder (with or without class subfolders), a CSV file "
               "(path[,label]) or a dataset name")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds embed, index, search and export to the main CLI's subparsers."""
    embed = subparsers.add_parser(
        "embed", help="embed images with a trained experiment's model (embeddings.npy, "
                      "items.csv)")
    embed.add_argument("experiment", metavar="EXPERIMENT_DIR")
    embed.add_argument("images", nargs="+", metavar="IMAGES", help=IMAGES_HELP)
    embed.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="folder for embeddings.npy, items.csv and gallery.json")
    _add_model_arguments(embed)
    embed.add_argument("--dataset-root", type=Path,
                       help="where dataset names are found (default: the experiment's "
                            "dataset.root)")
    _add_run_arguments(embed)
    embed.add_argument("--workers", type=int,
                       help="DataLoader processes (default: training.num_workers)")
    embed.set_defaults(func=_guarded(run_embed))

    index = subparsers.add_parser("index", help="build a faiss index over sdm embed's output")
    index.add_argument("folder", type=Path, metavar="DIR", help="an sdm embed --out folder")
    index.add_argument("--kind", choices=INDEX_KINDS, default=FLAT,
                       help="flat: exact inner product (default); hnsw, ivf: approximate, for "
                            "large galleries")
    hnsw = INDEX_PARAMETERS[HNSW]
    index.add_argument("--hnsw-m", type=int, dest="m",
                       help=f"hnsw: links per item (default {hnsw['m']})")
    index.add_argument("--ef-construction", type=int,
                       help=f"hnsw: candidates while building (default {hnsw['ef_construction']})")
    index.add_argument("--ef-search", type=int,
                       help=f"hnsw: candidates while searching (default {hnsw['ef_search']})")
    index.add_argument("--nlist", type=int,
                       help="ivf: k-means cells (default sqrt(N), at most N/39)")
    index.add_argument("--nprobe", type=int,
                       help=f"ivf: cells searched per query (default "
                            f"{INDEX_PARAMETERS[IVF]['nprobe']})")
    index.set_defaults(func=_guarded(run_index))

    search = subparsers.add_parser(
        "search", help="the k nearest gallery items of query images, with the gallery's model")
    search.add_argument("folder", type=Path, metavar="DIR", help="an indexed sdm embed folder")
    search.add_argument("queries", nargs="+", metavar="QUERY_IMAGES", help=IMAGES_HELP)
    search.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    search.add_argument("--out", type=Path, metavar="FILE.json", help="also write JSON here")
    search.add_argument("--picture", type=Path, metavar="FILE.png",
                        help="also draw the queries and their neighbours")
    search.add_argument("--experiment", type=Path, metavar="EXPERIMENT_DIR",
                        help="where the gallery's experiment is now (default: where it was)")
    _add_run_arguments(search)
    search.set_defaults(func=_guarded(run_search))

    export = subparsers.add_parser(
        "export", help="trunk + embedder + L2 normalization as one ONNX or TorchScript file")
    export.add_argument("experiment", metavar="EXPERIMENT_DIR")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="fmt",
                        help="onnx (run with onnxruntime; needs the export extra) or "
                             "torchscript (torch.jit.load; deprecated by PyTorch)")
    export.add_argument("--out", required=True, type=Path, metavar="FILE")
    _add_model_arguments(export)
    export.set_defaults(func=_guarded(run_export))


def run_embed(args: argparse.Namespace) -> int:
    """Embed IMAGES with the experiment's model into the --out folder."""
    from sdm.inference.gallery import embed_folder

    gallery = embed_folder(args.experiment, args.images, args.out, fold=args.fold,
                           concatenated=args.concatenated, dataset_root=args.dataset_root,
                           device=args.device, batch_size=args.batch_size,
                           num_workers=args.workers)
    print(f"embedded {gallery.size} images ({gallery.record['dim']}-d, "
          f"{_model_name(gallery.identity)}) into {gallery.folder}/")
    return 0


def run_index(args: argparse.Namespace) -> int:
    """Build a faiss index over an embeddings folder."""
    from sdm.inference.gallery import read_gallery
    from sdm.inference.index import write_index

    info = write_index(read_gallery(args.folder), args.kind, m=args.m,
                       ef_construction=args.ef_construction, ef_search=args.ef_search,
                       nlist=args.nlist, nprobe=args.nprobe)
    parameters = ", ".join(f"{k}={v}" for k, v in info["parameters"].items())
    print(f"{info['kind']} index of {info['size']} items ({info['dim']}-d"
          f"{', ' + parameters if parameters else ''}) written to {args.folder}/")
    return 0


def run_search(args: argparse.Namespace) -> int:
    """Print (and write, draw) the nearest gallery items of the queries."""
    from sdm.inference.retrieval import GallerySearch, format_results, write_search_results

    searcher = GallerySearch.open(args.folder, args.experiment, args.device)
    queries = searcher.load_queries(args.queries)
    results = searcher.search(queries, args.k, batch_size=args.batch_size, progress=True)
    print(format_results(results))
    if args.out:
        print(f"results written to {write_search_results(args.out, results)}")
    if args.picture:
        from sdm.inference.picture import draw_search_picture

        picture = draw_search_picture(results, queries.dataset, searcher.gallery.images().dataset,
                                      args.picture)
        print(f"picture: {picture}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write the model as one ONNX or TorchScript file, checked against PyTorch."""
    from sdm.inference.export import export_model
    from sdm.inference.loading import load_model

    model, _ = load_model(args.experiment, args.fold, concatenated=args.concatenated,
                          device="cpu")
    description = export_model(model, args.out, args.fmt)
    print(f"{args.fmt} model ({_model_name(model.identity)}, input "
          f"{description['input']['shape']}, output {description['output']['shape']}) "
          f"written to {args.out}; description in {args.out}.json; max abs difference from "
          f"PyTorch {description['parity_max_abs_difference']:.2g}")
    return 0


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, metavar="K",
                       help="that fold's best checkpoint (default: the lowest trained fold)")
    which.add_argument("--concatenated", action="store_true",
                       help="every trained fold's best checkpoint, embeddings concatenated")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda, ... (default: the experiment's "
                                         "training.device)")
    parser.add_argument("--batch-size", type=int,
                        help="images per forward pass (default: training.eval_batch_size)")


def _model_name(identity: dict) -> str:
    folds = ", ".join(map(str, identity["folds"]))
    what = f"folds {folds} concatenated" if identity["concatenated"] else f"fold {folds}"
    return f"{identity['name']} {what}"


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` with the errors of bad input turned into a message and exit code 2."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (ValueError, OSError) as error:  # InferenceError, DatasetError, missing files
            print(f"sdm {args.command}: error: {error}", file=sys.stderr)
            return ERROR_EXIT_CODE

    guarded.__doc__ = run.__doc__
    return guarded
