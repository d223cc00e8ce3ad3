"""Course path for losses."""
from ..nn import CrossEntropyLoss, MSELoss

__all__ = ["CrossEntropyLoss", "MSELoss"]
