"""``relay demo``: the whole pipeline in one process, on throw-away local parts."""
