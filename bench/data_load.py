"""Time to load an ImageFolder dataset whose decoded copy is already cached (``ltpa.data``).

Usage:
    python3 bench/data_load.py --data DIR [--repeats 3] [--prepare MODEL] [--device cpu]
        [--uncached]

The first call decodes the folder if the cache does not hold it yet (reported apart); each
repeat then lists the files, computes the cache key from every file's path, size and time, and
reads the cached tensor back: the part of ``ltpa train``'s setup spent on the data. With
``--prepare MODEL`` it also times the whole setup of a run of MODEL under the fast recipe
(``Trainer.prepare``: data, validation split, model, loaders, optimiser; no epoch), twice, as
``setup_s`` in a run's log measures it. ``--uncached`` also times one load with the cache turned
off (``LTPA_CACHE_DIR`` empty): every file decoded, as a run's first load of a folder does.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltpa.data import CACHE_ENV, load_dataset  # noqa: E402
from ltpa.device import get_device  # noqa: E402
from ltpa.recipe import recipe_for  # noqa: E402
from ltpa.training import TrainConfig, Trainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prepare", metavar="MODEL", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/data_load_bench", help="run folder (not written)")
    parser.add_argument("--uncached", action="store_true", help="also time a load that decodes")
    args = parser.parse_args()
    if args.uncached:
        saved = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = ""
        started = time.perf_counter()
        train, test = load_dataset(args.data, None, False, None)
        print(f"uncached load (every file decoded, {os.cpu_count()} CPUs): "
              f"{time.perf_counter() - started:.2f} s, {len(train)} + {len(test)} images")
        if saved is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = saved
    started = time.perf_counter()
    train, test = load_dataset(args.data, None, False, None)
    print(f"first load (decodes unless cached): {time.perf_counter() - started:.2f} s, "
          f"{len(train)} + {len(test)} images")
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        load_dataset(args.data, None, False, None)
        times.append(time.perf_counter() - started)
    print(f"cached load: median {statistics.median(times):.2f} s over {args.repeats} "
          f"({', '.join(f'{t:.2f}' for t in times)})")
    if args.prepare:
        cuda = get_device(args.device).type == "cuda"
        for attempt in (1, 2):
            config = TrainConfig(**{**recipe_for(args.prepare, cuda=cuda), "model": args.prepare,
                                    "data": args.data, "out": args.out, "device": args.device})
            started = time.perf_counter()
            Trainer(config).prepare()
            print(f"setup of a {args.prepare} run ({attempt}): {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
