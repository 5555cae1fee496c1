"""Shared by the sampling scenario scripts (run from this folder)."""


def rows_by_line(prof, filename):
    """{lineno: [live size, alloc size, samples]} for filename's sites,
    summed per line: memwatch's 'lineno' key is (file, line, function), and
    before 3.12 a comprehension's frame and its caller share a line, so a
    sample taken in the caller's part (the comprehension's function object)
    is a row of its own that a plain dict would let overwrite the big one."""
    out: dict = {}
    for row in prof.statistics("lineno"):
        if row.key.filename == filename:
            acc = out.setdefault(row.key.lineno, [0, 0, 0])
            acc[0] += row.size
            acc[1] += row.alloc_size
            acc[2] += row.samples
    return out
