"""Two `lorafit serve` builds under the same load, in alternating turns: which micro-batcher serves more.

python bench/serve_ab.py RUN BASELINE_SRC [--turns 10] [--seconds 5]
BASELINE_SRC is the `src` folder of another checkout (e.g. `git worktree add /tmp/old 2e766bf`, then
/tmp/old/src); the other server runs this checkout. Both servers stay up; they take turns of
`--seconds` under 32 clients (the order swaps every turn), and the model alone takes a turn after
each pair, so the host's speed drifting moves all three alike. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from contextlib import ExitStack

from serve_load import CLIENTS, ROOT, Load, ModelAlone, agnews_texts, load, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("baseline_src")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5)
    options = parser.parse_args()
    texts = agnews_texts()
    alone = ModelAlone(options.run, texts, CLIENTS)
    sources = {"baseline": options.baseline_src, "this checkout": str(ROOT / "src")}
    served = {name: Load(0.0) for name in sources}
    with ExitStack() as servers:
        urls = {}
        for name, src in sources.items():
            os.environ["PYTHONPATH"] = src  # the server process imports lorafit from there
            urls[name] = servers.enter_context(server(options.run, True, texts, CLIENTS))
        for turn in range(options.turns):
            for name in list(sources)[:: 1 if turn % 2 == 0 else -1]:
                served[name].add(asyncio.run(load(urls[name], texts, CLIENTS, options.seconds)))
            alone.turn(options.seconds)
    ceiling = alone.summary()["texts_per_s"]
    result = {name: s.summary() for name, s in served.items()}
    for summary in result.values():
        summary["share_of_model_alone"] = summary["texts_per_s"] / ceiling
    print(json.dumps({**result, "model_alone": alone.summary(), "turns": options.turns, "seconds": options.seconds}))


if __name__ == "__main__":
    main()
