"""Evaluation: the FID Inception in Flax (`inception`), the MNIST feature network
(`mnist_features`), the metrics on their features (`metrics`), and the jobs: FID / IS / KID of
samples (`fid`), DDPM's bits/dim (`bpd`), reference statistics (`reference`), over one
resumable shard store (`shards`)."""
