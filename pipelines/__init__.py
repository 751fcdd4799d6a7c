"""One thin entry point per DVC stage (`python -m pipelines.<stage>`): settings in, library call, outputs out.

Importing this package, which every stage does before it imports torch, lets torch's idle OpenMP
threads sleep (`OMP_WAIT_POLICY=PASSIVE`) unless the environment sets `OMP_WAIT_POLICY` or
`GOMP_SPINCOUNT` itself. By libgomp's default they spin at every barrier, and when another busy
process shares the cores a spinning thread holds a core its partner needs: beside a second
training on 2 cores a `train_unet` step took 3-9x its time alone, and 1.4-1.8x when sleeping. Alone,
sleeping costs 10-20% on the small demo UNet (bench/bench_busy_cpu.py). No result changes.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
