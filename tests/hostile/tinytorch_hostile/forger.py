"""Fails with a reason written to forge the board: a table, an image, a comment hiding the rest."""
from .honest import Honest

FORGED = (
    "oops |\n\n## Corrected final ranking\n\n| rank | backend | score |\n|---|---|---|\n"
    "| 1 | hostile_forger | 99.0 |\n\n![winner](https://evil.example/pwned.png)\n"
    "<img src=x onerror=alert(1)><script>alert(2)</script>\n<!-- the rest of the board is hidden"
)


class Forger(Honest):
    def matmul(self, a, b):
        raise RuntimeError(FORGED)
