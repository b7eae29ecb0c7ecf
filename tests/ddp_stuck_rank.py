"""`python -m fastcodec.train` with rank 1 stuck for 10 min in its second step: launched under
torchrun by tests/test_train.py to see the other rank give up after --dist-timeout."""
import os
import sys
import time

from fastcodec.train import __main__ as train_main
from fastcodec.train import loop

if os.environ.get("RANK") == "1":
    _step = loop.Trainer.train_step

    def _stuck_step(self, x, position=None):
        if self.step == 1:
            time.sleep(600)
        return _step(self, x, position)

    loop.Trainer.train_step = _stuck_step

sys.exit(train_main.main())
