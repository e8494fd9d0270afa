"""The MoESD performance model (arXiv 2505.19645), torch-free.

Nothing in this package may import torch: a user with only a config.json and a GPU name must get
predictions from numpy alone (a test runs it with torch blocked).
"""
