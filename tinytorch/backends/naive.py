"""The learning reference: plain Python loops, slow on purpose.

This is the code a student reads first and the yardstick every speedup is
measured against. It favours being obviously right over being fast; only
tiny problems finish in reasonable time (a 64x64x64 matmul takes ~0.1 s).
"""
import numpy as np

from .base import ComputeBackend


class NaiveBackend(ComputeBackend):
    """Triple-loop matmul and sliding-window convolution in pure Python."""

    def matmul(self, a, b):
        m, k = a.shape
        n = b.shape[1]
        rows, cols = a.tolist(), b.T.tolist()   # Python floats: no per-element numpy overhead
        result = np.zeros((m, n), dtype=a.dtype)
        for i in range(m):
            row = rows[i]
            for j in range(n):
                col = cols[j]
                total = 0.0
                for p in range(k):
                    total += row[p] * col[p]
                result[i, j] = total
        return result

    def conv2d(self, x, w, stride=1, padding=0):
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        oh = (h + 2 * padding - kh) // stride + 1
        ow = (wd + 2 * padding - kw) // stride + 1
        image = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))).tolist()
        weight = w.tolist()
        result = np.zeros((n, f, oh, ow), dtype=x.dtype)
        for b in range(n):
            for o in range(f):
                for i in range(oh):
                    for j in range(ow):
                        total = 0.0
                        for ch in range(c):
                            plane, kernel = image[b][ch], weight[o][ch]
                            for di in range(kh):
                                row, krow = plane[i * stride + di], kernel[di]
                                for dj in range(kw):
                                    total += row[j * stride + dj] * krow[dj]
                        result[b, o, i, j] = total
        return result
