"""Import-time code: leaves a mark wherever it can write and reads what it should not."""
import os

from .honest import Honest

MARK = "tinytorch-hostile-import-mark"
for _folder in (os.getcwd(), os.path.expanduser("~"), "/tmp"):
    try:
        with open(os.path.join(_folder, MARK), "w") as _f:
            _f.write("import-time code ran here")
    except OSError:
        pass


class ImportSpy(Honest):
    pass
