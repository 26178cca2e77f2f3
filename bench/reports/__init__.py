"""Reports: Tables 3-8 and figures, built only from a results folder.

``collect`` reads run folders into tidy DataFrames (meaning comes from each run's config.json,
never from folder names), ``tables`` turns them into the paper's tables as pure functions (and
the fairness tables beside them: paired, post-processing, patch mode and patch scale),
``figures`` draws Figs. 16-18 and per-case box plots, ``paper`` holds the paper's own numbers.
The golden check (committed reference tables) is its own layer above this one: `bench.golden`.
"""

