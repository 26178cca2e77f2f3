"""Engine: training loop, reiterative training, volume inference and evaluation runs."""
