"""A small stand-in for a training script: gradient descent on a noisy linear model.

It prints one JSON line per epoch (intermediate reports, with a `step`) and a final
`val_loss=...` line, which is how a shell study hands metrics to somatize.
"""

from __future__ import annotations

import argparse
import json
import random


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--init", choices=["zeros", "random"], default="zeros")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    data = [(x / 50.0, 3.0 * x / 50.0 - 1.0 + rng.gauss(0, 0.1)) for x in range(100)]
    train, val = data[::2], data[1::2]
    w, b = (rng.uniform(-1, 1), rng.uniform(-1, 1)) if args.init == "random" else (0.0, 0.0)

    def loss(rows: list[tuple[float, float]]) -> float:
        return sum((w * x + b - y) ** 2 for x, y in rows) / len(rows)

    for epoch in range(args.epochs):
        rng.shuffle(train)
        for i in range(0, len(train), args.batch):
            batch = train[i : i + args.batch]
            gw = sum(2 * (w * x + b - y) * x for x, y in batch) / len(batch)
            gb = sum(2 * (w * x + b - y) for x, y in batch) / len(batch)
            w, b = w - args.lr * gw, b - args.lr * gb
        value = loss(val)
        if value != value or value > 1e6:  # diverged: report it and stop early
            print(json.dumps({"step": epoch, "val_loss": 1e6}))
            break
        print(json.dumps({"step": epoch, "val_loss": value}))
    print(f"val_loss={min(loss(val), 1e6)}")


if __name__ == "__main__":
    main()
