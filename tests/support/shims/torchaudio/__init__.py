"""TESTS ONLY stub of torchaudio (see ../fluxlora_test_stub.py); never shipped in the pack."""
import sys

import fluxlora_test_stub

fluxlora_test_stub.install(sys.modules[__name__])
