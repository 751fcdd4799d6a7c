"""No import of the project's modules reaches for the network (albumentations, ultralytics, diffusers)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import socket
attempts = []
def refuse(self, address, *args, **kwargs):
    attempts.append(address)
    raise OSError("network refused in test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
import augment.data, augment.generate, augment.gen_metrics, detection.yolo
detection.yolo.ultralytics_offline()
print("ATTEMPTS", attempts)
"""


def test_importing_the_project_makes_no_network_connection():
    env = {k: v for k, v in os.environ.items() if k not in ("NO_ALBUMENTATIONS_UPDATE", "YOLO_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ATTEMPTS []" in result.stdout, result.stdout + result.stderr[-2000:]
