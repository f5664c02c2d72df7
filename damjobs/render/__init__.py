"""Rendering of cache entries: validation of originals, image steps and the worker pool.

Only `wand_setup` imports Wand, so that damjobs's ImageMagick policy is active before
the library loads. `steps`, `formats` and `types` are pure Python and safe to import
anywhere.
"""
