"""The synthetic production line: parts, defects, nuisances and acquisition setups (domains).

No real inspection data can be downloaded, so the project renders its own, deterministically by
seed: :func:`mentoring.line.generate.generate_line` writes images, masks and a manifest.
"""
