"""The loop the example scripts share: train for some epochs, print loss, accuracy and time."""
import time

import numpy as np

import tinytorch
from tinytorch.data import DataLoader


def accuracy(model, dataset, batch_size=256):
    """Fraction of `dataset` that `model` classifies correctly (eval mode, no graph)."""
    model.eval()
    correct = 0
    with tinytorch.no_grad():
        for images, labels in DataLoader(dataset, batch_size):
            correct += int((model(images).data.argmax(axis=1) == labels.data).sum())
    return correct / len(dataset)


def fit(model, optimizer, train, test, epochs, batch_size):
    """Train with cross-entropy; print one line per epoch; return the final test accuracy."""
    loss_fn = tinytorch.nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size, shuffle=True)
    test_accuracy = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        losses = []
        for images, labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        test_accuracy = accuracy(model, test)
        print(f"epoch {epoch:2d}/{epochs}  loss {np.mean(losses):.4f}  "
              f"test accuracy {test_accuracy:6.2%}  time {seconds:.2f} s", flush=True)
    return test_accuracy


def add_common_arguments(parser, epochs, lr, batch_size):
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--backend", default="optimized",
                        help="any registered backend (default: optimized)")
    parser.add_argument("--seed", type=int, default=0)
