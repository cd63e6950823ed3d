"""Paper 1: multi-modal self-supervised semantic communication (Zhao et al., arXiv 2503.13940).

Importing this package registers paper 1's split tasks (:mod:`flwr_semcom.paper1.tasks`) in the
split runtime's registries and the validation rules of the ``pretrain`` keys
(:mod:`flwr_semcom.paper1.settings`). See docs/paper1.md.
"""

from flwr_semcom.paper1 import settings as _settings  # noqa: F401  (registers config rules)
from flwr_semcom.paper1 import tasks as _tasks  # noqa: F401  (registers the split tasks)
