"""Models: the member protocol, one adapter per family (``adapters/``) over its networks (``nets/``), the noise
schedules, the codecs that decode samples to images, the zoo (configs to members), checkpoint and hub loading,
weight checks and the fast paths (precision, compile, CUDA graphs)."""
