"""The MI-estimator benchmark: critics trained on pairs (x, y) of known mutual information.

- `tasks`: correlated Gaussians, a Student-t, and invertible transforms of them (known MI);
- `problems`: one task at one MI, or pairs from an ``.npz`` someone brings;
- `critics`: a coupling trained as the critic of an estimator, and its estimate;
- `tables`, `figures`: the markdown tables and the bias figure; `cli`: ``ssvae mi-bench``.

Apart from the SSVAE science it checks: it trains `couplings` as critics under the
`objectives`' estimators with `optim`'s Adam, and only the command line (`ssvae_core.cli`)
imports it.
"""

# The suite's defaults, here (nothing imported) so that ``ssvae mi-bench --help`` shows them.
DEFAULT_STEPS = 2000
DEFAULT_MIS: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
DEFAULT_BATCH = 64
DEFAULT_LR = 5e-4
