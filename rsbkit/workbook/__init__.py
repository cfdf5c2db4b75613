"""What notebooks, sweeps, studies and the command line call: notebook parameters and procedures
(``procedures``), the sweep runner and cluster executors (``sweep``, ``cluster``), studies over runs
(``studies``, ``model_studies``), figures, the paper's tables (``paper``), benchmarks (``bench``) and
the CLI (``cli``). Built on ``rsbkit.core``; the teaching explorers (``rsbkit.explore``) do not use it."""
