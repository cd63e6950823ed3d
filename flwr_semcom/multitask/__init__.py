"""Multi-task semantic communication with graph-attention inter-block correlation (paper 3).

Summary of arXiv 2501.02006 ("Multi-Task Semantic Communication With Graph
Attention-Based Feature Correlation Extraction"): a shared ResNet encoder's block outputs are
graph nodes; the GAI module (:mod:`.gai`) updates them with multi-head graph attention and fuses
them with task-specific weights; each task's feature is downscaled to its share of the
bandwidth ratio ``R``, sent over AWGN and decoded by a task-specific decoder (:mod:`.system`).

Modules: :mod:`.backbone` (block encoder), :mod:`.gai`, :mod:`.tasks` (decoders, losses,
metrics), :mod:`.system` (GAI, GAI-w and separate links), :mod:`.spec` (typed settings),
:mod:`.data`, :mod:`.training`, :mod:`.settings` (config rules and the one hydra edge:
config -> :class:`~.spec.MultitaskSettings`), :mod:`.protocol` and :mod:`.client` (Flower
messages and handlers), :mod:`.report` (tables, gains, plots). Server side:
``strategies/fedavg_multitask.py`` and ``simulations/experiments/multitask.py``;
documentation: ``docs/multitask.md``.
"""
