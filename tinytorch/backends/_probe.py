"""`python -m tinytorch.backends._probe NAME DISTRIBUTION`: load one backend, print its record.

Run by `tinytorch backends` in a subprocess with a time limit, so a plugin
whose import hangs or crashes cannot hang or crash the listing.
"""
import json
import sys

from .registry import probe

name, distribution = sys.argv[1], sys.argv[2] or None
print(json.dumps(probe(name, distribution).to_dict()))
