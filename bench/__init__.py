"""Benchmarks: the gateway against hand-written asyncio glue (``make bench``)."""
