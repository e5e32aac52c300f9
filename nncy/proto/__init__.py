"""Protocol-buffer schema of NNabla's model files (NNP); see nnabla.proto."""
