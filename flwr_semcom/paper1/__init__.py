"""Paper 1: multi-modal self-supervised semantic communication (Zhao et al., arXiv 2503.13940).

Importing this package registers the validation rules of the ``pretrain`` keys
(:mod:`flwr_semcom.paper1.settings`). The split tasks are built by
:mod:`flwr_semcom.paper1.factory`; the equation → file table is in docs/paper1.md.
"""

from flwr_semcom.paper1 import settings as _settings  # noqa: F401  (registers config rules)
