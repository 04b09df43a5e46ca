"""The neighbour engine against faiss and scikit-learn: k nearest neighbours and k-means, time and agreement.

    python benchmarks/neighbour_engine.py                     # N = 20,000 and 40,000, d = 2,048, 2 threads
    python benchmarks/neighbour_engine.py --n 5000 --dim 128  # smaller

Why the strategies run on al_lightning.strategies.neighbours (exact, float64 products on the
fixed-point grid) rather than faiss: this measures what exactness costs against faiss's exact
float32 search (IndexFlatL2) and its k-means, and how often float32 changes a neighbour list.
faiss-cpu is not a dependency of the project: ``pip install faiss-cpu`` to run this.
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np
import torch
from sklearn.cluster import KMeans
from synthetic_pool import load_pool

from al_lightning.strategies.neighbours import kmeans, nearest_neighbours, on_one_grid


def timed(work):
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 40_000])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=20, help="neighbours per point")
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=10, help="Lloyd iterations for every k-means (fixed)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    for n in args.n:
        features = load_pool(n, 1000, args.dim, {"features"})["features"]
        x = features.numpy()
        (grid,), prepare = timed(lambda: on_one_grid(features))
        (_, ours), knn_ours = timed(lambda: nearest_neighbours(grid, args.k))
        index = faiss.IndexFlatL2(args.dim)
        index.add(x)
        (_, theirs), knn_faiss = timed(lambda: index.search(x, args.k + 1))
        theirs = torch.from_numpy(theirs[:, 1:])  # the first is the point itself (barring duplicates)
        same_lists = float((ours == theirs).all(dim=1).float().mean())
        same_sets = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ours.tolist(), theirs.tolist())]))
        generator = torch.Generator().manual_seed(0)
        clusters, kmeans_ours = timed(lambda: kmeans(grid, args.clusters, generator, iterations=args.iterations))
        faiss_kmeans = faiss.Kmeans(args.dim, args.clusters, niter=args.iterations, seed=0)
        _, kmeans_faiss = timed(lambda: faiss_kmeans.train(x))
        sk = KMeans(args.clusters, n_init=1, max_iter=args.iterations, tol=0, random_state=0)
        _, kmeans_sklearn = timed(lambda: sk.fit(x))
        print(json.dumps({
            "n": n, "dim": args.dim, "k": args.k, "clusters": args.clusters, "iterations": args.iterations,
            "threads": args.threads, "grid_s": round(prepare, 2), "knn_engine_s": round(knn_ours, 2),
            "knn_faiss_s": round(knn_faiss, 2), "knn_same_lists": round(same_lists, 4), "knn_same_sets": round(same_sets, 4),
            "kmeans_engine_s": round(kmeans_ours, 2), "kmeans_engine_iterations": clusters.iterations,
            "kmeans_faiss_s": round(kmeans_faiss, 2), "kmeans_sklearn_s": round(kmeans_sklearn, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
