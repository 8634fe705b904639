"""Selective synaptic plasticity: quadratic penalties that keep important parameters in place.

Every method here minimises ``L_t(θ) + s Σ_i b_i (θ_i − θ*_i)²`` (:mod:`.anchor`) and differs in
the importance ``b``:

* ``l2``: b = 1 (:mod:`.l2`);
* ``ewc``, ``online-ewc``: the diagonal Fisher, per sample (:mod:`.ewc`, :mod:`.persample`);
* ``si``: the path integral of the loss decrease (:mod:`.si`);
* ``mas``: the sensitivity of the squared output norm (:mod:`.mas`);
* ``rwalk``: online Fisher plus a KL-normalised path score (:mod:`.rwalk`);
* ``scp``: random slices of the mean response (:mod:`.scp`).
"""

from lifelong.strategies.regularization import ewc, l2, mas, rwalk, scp, si  # noqa: F401  (register)
from lifelong.strategies.regularization.anchor import AnchoredStrategy, QuadraticPenalty
from lifelong.strategies.regularization.persample import diagonal_fisher, per_sample_gradient_sum

__all__ = ["AnchoredStrategy", "QuadraticPenalty", "diagonal_fisher", "per_sample_gradient_sum"]
