"""Train the reference ResNet on CIFAR-10 (needs the data: see the message when it is absent).

    python examples/train_cifar10.py [--download] [--limit 5000] [--epochs 5]
"""
import argparse
import sys

import tinytorch
from tinytorch.data import TensorDataset
from training_loop import add_common_arguments, fit


def subset(dataset, limit):
    return TensorDataset(*(a[:limit] for a in dataset.arrays)) if limit else dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, epochs=5, lr=0.05, batch_size=64)
    parser.add_argument("--root", help="folder holding cifar-10-batches-py "
                                       "(default: $TINYTORCH_DATA, then ~/.cache/tinytorch)")
    parser.add_argument("--download", action="store_true",
                        help="fetch the official archive (about 170 MB) if it is absent")
    parser.add_argument("--limit", type=int, default=0,
                        help="train and test on the first N images only (0: all)")
    parser.add_argument("--width", type=int, default=16, help="ResNet width of the first stage")
    args = parser.parse_args()
    try:
        train, test = tinytorch.load_cifar10(args.root, download=args.download)
    except FileNotFoundError as exc:
        print(f"{exc}\nOr rerun this script with --download.", file=sys.stderr)
        return 2
    tinytorch.manual_seed(args.seed)
    tinytorch.set_backend(args.backend)
    train, test = subset(train, args.limit), subset(test, args.limit)
    model = tinytorch.build_resnet(width=args.width)
    optimizer = tinytorch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                                    weight_decay=5e-4)
    print(f"CIFAR-10 ResNet(width={args.width}) on backend {args.backend!r}: "
          f"{len(train)} train, {len(test)} test images")
    final = fit(model, optimizer, train, test, args.epochs, args.batch_size)
    print(f"final test accuracy {final:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
