"""Train a small CNN on scikit-learn's 8x8 digits with the optimized backend (>= 95% test accuracy).

    python examples/train_digits_cnn.py [--epochs 12] [--backend optimized]
"""
import argparse

import tinytorch
from tinytorch import nn
from training_loop import add_common_arguments, fit


def build_cnn():
    """(N, 1, 8, 8) -> conv 16 -> pool -> conv 32 -> pool -> linear -> 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 16 x 4 x 4
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 2 x 2
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, epochs=12, lr=5e-3, batch_size=32)
    args = parser.parse_args()
    tinytorch.manual_seed(args.seed)
    tinytorch.set_backend(args.backend)
    train, test = tinytorch.load_digits(as_images=True)
    model = build_cnn()
    optimizer = tinytorch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"digits CNN on backend {args.backend!r}: {len(train)} train, {len(test)} test images")
    final = fit(model, optimizer, train, test, args.epochs, args.batch_size)
    print(f"final test accuracy {final:.2%}")


if __name__ == "__main__":
    main()
