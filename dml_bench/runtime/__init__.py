"""Process plumbing every layer may use: errors, devices, processes and signals, files, run folders."""
