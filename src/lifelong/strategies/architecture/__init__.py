"""Additional neural resources: each task gets its own capacity.

* ``pnn``: Progressive Neural Networks (Rusu et al. 2016), a new column per task.
* ``packnet``: PackNet (Mallya & Lazebnik 2018), iterative pruning of one fixed network.
* ``cpg``: Compacting, Picking and Growing (Hung et al. 2019).
"""

from lifelong.strategies.architecture import cpg, packnet, pnn  # noqa: F401  (register)
