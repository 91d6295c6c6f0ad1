"""Prints the seconds this machine takes for a fixed single-threaded loop right now.

On a shared VM the same work takes more CPU time while the host is busy, so a load step measured
then costs more per call for no fault of crmd's: `ab.sh` and the ladder run this before each step
(about 0.26 s on a quiet host here; 0.36 s was seen on a busy one). The loop runs at module level,
as written, so its figure stays comparable between runs of this file.
"""
import time

start = time.perf_counter()
total = 0
for i in range(3_000_000):
    total += i
print("%.3f" % (time.perf_counter() - start))
