"""Submissions that break one competition rule each; `honest.Honest` breaks none.

Every hostile backend computes correct answers (through `Honest`) and adds
one misdeed, so the arena must name the misdeed, not a wrong answer.
"""
