"""One thin entry point per DVC stage (`python -m pipelines.<stage>`): settings in, library call, outputs out.

Importing this package, which every stage does before it imports torch, lets torch's idle OpenMP
threads sleep (`OMP_WAIT_POLICY=PASSIVE`) unless the environment sets `OMP_WAIT_POLICY` or
`GOMP_SPINCOUNT` itself. By libgomp's default they spin at every barrier, and when another busy
process shares the cores a spinning thread holds a core its partner needs: beside a second
training a `train_unet` step took several times its time alone, far less with sleeping threads,
which alone cost a little (bench/bench_busy_cpu.py; figures in bench/RESULTS.md). No result changes.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
