"""Image embeddings of a pool, computed once per (pool, backend) and cached for every checkpoint.

A cache file ``<cache_dir>/<backend>-<key>.pt`` holds the embeddings with the pool's fingerprint
and the backend's configuration; the key hashes both, so a changed pool or backend never reads a
stale file. The pipeline computes them in their own small stage:

    python -m lib.mis.embeddings OUT_DIR --params mis --set data_dir=data/shapes

(reads ``pool`` and ``backends`` of the merged parameters, as the notebook does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

from lib import storage
from lib.data.image_pool import ImagePool, load_pool
from lib.mis.similarity import SimilarityBackend, create_backend


def cache_path(cache_dir: str | Path, pool: ImagePool, backend: SimilarityBackend) -> Path:
    key = hashlib.sha256(json.dumps({"pool": pool.fingerprint(), "backend": backend.config()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{backend.name}-{key}.pt"


def cached_embeddings(pool: ImagePool, backend: SimilarityBackend, cache_dir: str | Path | None,
                      progress: bool = True) -> torch.Tensor:
    """The pool's embeddings under ``backend``: read from ``cache_dir`` when there, else computed and written."""
    path = cache_path(cache_dir, pool, backend) if cache_dir is not None else None
    if path is not None and path.is_file():
        payload = storage.load_torch(path)
        if payload.get("pool") == pool.fingerprint() and payload.get("backend") == backend.config():
            return payload["embeddings"]
    embeddings = backend.embed(pool, progress=progress)
    if path is not None:
        storage.save_torch(path, {"pool": pool.fingerprint(), "backend": backend.config(), "source": pool.source,
                             "names": pool.names, "embeddings": embeddings})
    return embeddings


def main(argv=None) -> int:
    from lib.params import ParameterError, load_params, parse_sets

    parser = argparse.ArgumentParser(prog="python -m lib.mis.embeddings", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--params", nargs="*", default=[], metavar="SECTION")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--params-file", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        params = {**load_params(args.params, args.params_file), **parse_sets(args.set)}
        missing = {"pool", "backends"} - set(params)
        if missing:
            raise ParameterError(f"the parameters lack {sorted(missing)} (the notebook's pool and backends)")
        backends = [create_backend(spec) for spec in params["backends"]]  # validates before the pool is read
        pool = load_pool(params["pool"], params.get("data_dir"))
    except (ParameterError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for backend in backends:
        path = cache_path(args.out_dir, pool, backend)
        cached_embeddings(pool, backend, args.out_dir)
        print(f"{backend.name}: {len(pool)} images -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
