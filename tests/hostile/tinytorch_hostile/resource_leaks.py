"""Resources outside the limits: shared memory, files that outlive the worker, a daemon."""
import os
import time

from .honest import Honest

LEFTOVER = "tinytorch-hostile-leftover"


class ShmHog(Honest):
    """Parks 2.5 GB in /dev/shm (not resident memory of any process) and files in /tmp."""

    def __init__(self):
        for folder in ("/tmp", "/dev/shm", os.environ.get("TMPDIR", "/tmp")):
            try:
                with open(os.path.join(folder, LEFTOVER), "w") as f:
                    f.write("outlived the worker")
            except OSError:
                pass

    def matmul(self, a, b):
        with open(os.path.join("/dev/shm", LEFTOVER + ".bin"), "wb") as f:
            block = b"\1" * (64 << 20)
            for _ in range(40):
                f.write(block)
        return super().matmul(a, b)


class Daemon(Honest):
    """Double-forks a process that leaves the worker's session and sleeps forever."""

    def __init__(self):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(3600)
            os._exit(0)
        os.wait()
