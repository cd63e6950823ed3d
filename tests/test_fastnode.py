"""Adaptive SuperNode polls (flwr_semcom/runtime/fastnode.py): the pause against hand values,
the clock's mapping of Flower's two sleeps, the wiring into a loop shaped like Flower's, the
guards, and that the installed Flower still has the sleeps it replaces."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _clock import FakeClock  # tests/ is on sys.path

from flwr_semcom.runtime import fastnode


class _Time(FakeClock):
    """A stand-in ``time`` module: sleeps are recorded (``slept``), not slept."""

    @property
    def slept(self) -> list[float]:
        return self.sleeps

    def perf_counter(self) -> float:
        return 42.0


def test_idle_pause_hand_values() -> None:
    assert fastnode.idle_pause(0.0) == 0.1
    assert fastnode.idle_pause(1.0) == 0.1  # 5 % of 1 s < 0.1 s
    assert fastnode.idle_pause(10.0) == pytest.approx(0.5)
    assert fastnode.idle_pause(40.0) == pytest.approx(2.0)
    assert fastnode.idle_pause(600.0) == 3.0  # Flower's own idle sleep, never longer


def test_clock_maps_flowers_two_sleeps_and_passes_everything_else() -> None:
    real = _Time()
    clock = fastnode.PolledClock(real=real)
    clock.sleep(3)  # idle right after start: the minimum
    real.now += 20.0  # 20 s without a message
    clock.sleep(3)
    clock.sleep(0.5)  # reply poll
    clock.sleep(1.0)  # any other sleep is the real one
    clock.message_pulled()
    clock.sleep(3)
    assert real.slept[0] == 0.1
    assert real.slept[1] == pytest.approx(0.05 * 20.1)
    assert real.slept[2:] == [0.02, 1.0, 0.1]
    assert clock.perf_counter() == 42.0  # forwarded attribute


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_pause": 0.0}, "min_pause"),
        ({"min_pause": 4.0}, "min_pause"),
        ({"reply_poll": 0.6}, "reply_poll"),
    ],
)
def test_bad_clock_settings_are_one_line_errors(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fastnode.PolledClock(**kwargs)


LOOP = '''
import time

def _pull_and_store_message(inbox):
    """Flower's: a run ID when a message was pulled, else None."""
    return inbox.pop(0) if inbox else None

def loop(inbox, passes, replies):
    """The shape of Flower's SuperNode loop (start_client_internal.py:247-270, 470)."""
    for _ in range(passes):
        run_id = _pull_and_store_message(inbox)
        if run_id is None:
            time.sleep(3)
            continue
        while not replies.pop(0):
            time.sleep(0.5)
'''


def _loop_module(tmp_path: Path, source: str = LOOP) -> ModuleType:
    path = tmp_path / "fake_supernode_loop.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location("fake_supernode_loop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_installed_polls_in_a_loop_shaped_like_flowers(tmp_path: Path) -> None:
    module = _loop_module(tmp_path)
    real = _Time()
    clock = fastnode.PolledClock(real=real)
    got = fastnode.install_fast_polls(module, environ={}, flwr_version="1.41.0", clock=clock)
    assert got is clock and module.time is clock
    # idle, idle, a message whose reply takes two polls, then idle again after 30 s of idle
    inbox: list[Any] = [None, None, 7]
    module.loop(inbox, 3, [False, False, True])
    assert real.slept == [0.1, 0.1, 0.02, 0.02]
    real.now += 30.0
    module.loop([], 1, [])
    assert real.slept[-1] == pytest.approx(0.05 * 30.04)
    # installing again changes nothing
    assert fastnode.install_fast_polls(module, environ={}, flwr_version="1.41.0") is clock


@pytest.mark.parametrize(
    ("source", "environ", "version"),
    [
        (LOOP, {fastnode.ENV_VAR: "flower"}, "1.41.0"),  # opted out
        (LOOP, {}, "1.42.1"),  # a flwr this was not read in
        (LOOP.replace("time.sleep(3)", "time.sleep(2)"), {}, "1.41.0"),  # the loop changed
        (LOOP.replace("_pull_and_store_message", "_pull"), {}, "1.41.0"),
    ],
)
def test_guards_keep_flowers_loop(
    tmp_path: Path, source: str, environ: dict[str, str], version: str
) -> None:
    module = _loop_module(tmp_path, source)
    before = dict(vars(module))
    assert fastnode.install_fast_polls(module, environ=environ, flwr_version=version) is None
    assert dict(vars(module)) == before
    assert module.time is time


def test_bad_switch_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SEMCOM_SUPERNODE_POLLS must be 'fast' or 'flower'"):
        fastnode.install_fast_polls(_loop_module(tmp_path), environ={fastnode.ENV_VAR: "3"})


def test_the_installed_flower_has_the_sleeps_this_replaces() -> None:
    """A flwr upgrade that changes the SuperNode loop fails here, not silently in a deployment."""
    import flwr
    from flwr.supernode import start_client_internal as loop

    assert fastnode._supported(loop, str(flwr.__version__)) is None


def test_the_module_imports_no_torch() -> None:
    """The SuperNode process of an edge box runs it: standard library and flwr only."""
    import subprocess

    code = "import sys, flwr_semcom.runtime.fastnode; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
