"""Takes ten minutes to import."""
import time

from .honest import Honest

time.sleep(600)


class SlowImport(Honest):
    pass
