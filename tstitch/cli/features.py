"""`tstitch-train-features`: train the toy zoo's feature net (FD / class accuracy) on Fashion-MNIST."""
import json
import time
from pathlib import Path

import torch


def main(argv=None):
    import argparse

    from tstitch.data.toy import data
    from tstitch.data.toy.features import accuracy, train_classifier
    from tstitch.models.checkpoints import save_state_dict

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="tstitch/data/toy/weights/features.safetensors")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    net = train_classifier(data.load("train"), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed)
    acc = accuracy(net, *data.load("test"))
    save_state_dict({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, args.out)
    meta = {"test_accuracy": acc, "train_seconds": round(time.time() - start, 1), "args": vars(args)}
    Path(args.out).with_suffix(".json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
