"""``run_cli`` leaves the process group before the interpreter shuts down, whatever the command did."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from al_lightning.cli import run_cli
from al_lightning.errors import ConfigurationError


class Finished:
    """A command that ran to the end."""

    def __init__(self, args):
        pass


class Refused:
    """A command refused for its configuration (exit code 2)."""

    def __init__(self, args):
        raise ConfigurationError("refused (injected)")


@pytest.mark.parametrize("command, exit_code", [(Finished, None), (Refused, 2)], ids=["finished", "refused"])
def test_run_cli_destroys_the_gloo_group_it_ran_in(tmp_path, command, exit_code):
    # Left to the interpreter's shutdown, gloo's worker threads can abort a finished run (SIGABRT).
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        if exit_code is None:
            run_cli(command, [])
        else:
            with pytest.raises(SystemExit) as stopped:
                run_cli(command, [])
            assert stopped.value.code == exit_code
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
