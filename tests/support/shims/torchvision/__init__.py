"""TESTS ONLY stub of torchvision (see ../fluxlora_test_stub.py); never shipped in the pack."""
import sys

import fluxlora_test_stub

fluxlora_test_stub.install(sys.modules[__name__])
