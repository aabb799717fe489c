"""The detect package installs on its own with the pinned CPU torch and no torchvision."""
import subprocess
import sys


def test_pinned_torch_without_torchvision():
    code = ("import sys, torch, polar_detect; "
            "assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__; "
            "assert 'torchvision' not in sys.modules; print(torch.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
