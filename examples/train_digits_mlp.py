"""Train an MLP on scikit-learn's 8x8 digits with the optimized backend (>= 95% test accuracy).

    python examples/train_digits_mlp.py [--epochs 15] [--backend optimized]
"""
import argparse

import tinytorch
from training_loop import add_common_arguments, fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, epochs=15, lr=1e-3, batch_size=32)
    args = parser.parse_args()
    tinytorch.manual_seed(args.seed)
    tinytorch.set_backend(args.backend)
    train, test = tinytorch.load_digits()
    model = tinytorch.build_mlp(in_features=64, hidden_sizes=(128, 64), num_classes=10)
    optimizer = tinytorch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"digits MLP on backend {args.backend!r}: {len(train)} train, {len(test)} test images")
    final = fit(model, optimizer, train, test, args.epochs, args.batch_size)
    print(f"final test accuracy {final:.2%}")


if __name__ == "__main__":
    main()
