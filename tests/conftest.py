"""Suite-wide settings."""

import torch

# CI has 2 shared cores: torch's thread pool on tiny tensors costs more than it gains and makes
# timings erratic (a DIEN step took 0.03-0.9 s with 2 threads); models under test are tiny.
torch.set_num_threads(1)
