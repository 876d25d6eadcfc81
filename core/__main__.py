import atexit
import os
import sys

from .cli import main

rc = main()
# Tearing the interpreter down module by module takes about a second once torch and its compiler stack are
# imported, and frees nothing the operating system would not free anyway. Everything a command writes is
# closed by now; the exit handlers (logging, multiprocessing, ...) still run, then the process ends.
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(rc)
